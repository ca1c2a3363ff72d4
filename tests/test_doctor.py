"""`sdft data doctor` (issue 29): every check finds its planted defect in a dataset made from real photos that ship in
packages (tests/helpers/doctor_sets.py), and leaves the good images alone; a clean set of distinct real photos gives no
severe finding; the CLI's exit status, reports and `--move-to`; nothing is written into the dataset."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers.doctor_sets import write_clean, write_defects

from sdft.cli import main
from sdft.prep.check import load_data_config
from sdft.errors import ConfigError
from sdft.prep.doctor.findings import Severity
from sdft.prep.doctor.inputs import from_data_settings
from sdft.prep.doctor.run import DoctorOptions, doctor


def tree(folder: Path) -> dict[str, str]:
    """Every file below `folder` with its content hash: a dataset that was not touched hashes the same."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def defects(tmp_path_factory):
    root = tmp_path_factory.mktemp("doctor") / "set"
    files = write_defects(root)
    before = tree(root)
    settings = load_data_config(str(root), None, [f"class_dir={root / 'reg'}", "ensure_trigger=false"])
    result = doctor([from_data_settings(settings, "defects")])
    assert tree(root) == before  # the doctor reads, never writes
    return files, result


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("doctor_clean") / "photos"
    write_clean(root)
    settings = load_data_config(
        str(root), "photo of things", ["resolution=256", "enable_bucket=true", "min_bucket_reso=128"]
    )
    return root, doctor([from_data_settings(settings, "clean")])


def named(result, check: str, key: str) -> list:
    """Findings of `check` that name the image `key` (its stem)."""
    return [f for f in result.findings if f.check == check and any(Path(p).stem == key for p in f.files)]


def test_clean_photos_have_no_severe_finding(clean):
    _, result = clean
    assert len(result.datasets[0].items) == 9
    assert not result.severe, [f.line() for f in result.severe]
    assert not [f for f in result.findings if f.check in ("near-duplicate", "identity", "blur", "duplicate")]


def test_unreadable_file(defects):
    files, result = defects
    (f,) = named(result, "unreadable", "broken")
    assert f.severity == Severity.severe


def test_exact_and_near_duplicates(defects):
    _, result = defects
    (exact,) = [f for f in result.findings if f.check == "duplicate"]
    assert sorted(p.stem for p in exact.files) == ["face", "face_copy"]
    (near,) = named(result, "near-duplicate", "resaved")
    stems = {p.stem for p in near.files}
    assert "face" in stems  # a smaller JPEG re-save is found with its original, shown together
    assert not stems & {"flip", "tilt", "grace", "warm", "cat1"}  # other shots of the subject are not duplicates


def test_blur(defects):
    _, result = defects
    (f,) = named(result, "blur", "blurry")
    assert f.severity == Severity.severe
    for sharp in ("face", "flip", "tilt", "grace", "dark", "bright"):  # a dark photo is not a blurry one
        assert not named(result, "blur", sharp), sharp


def test_exposure(defects):
    _, result = defects
    (dark,) = named(result, "exposure", "dark")
    (bright,) = named(result, "exposure", "bright")
    assert "under-exposed" in dark.message and "over-exposed" in bright.message
    assert bright.severity == Severity.severe
    assert not named(result, "exposure", "face")


def test_resolution_names_the_upscale_factor(defects):
    _, result = defects
    (f,) = named(result, "resolution", "small")
    assert f.severity == Severity.severe and f.data["upscale"] == pytest.approx(512 / 160, rel=1e-3)
    assert not named(result, "resolution", "face")


def test_extreme_aspect_ratio(defects):
    _, result = defects
    (f,) = named(result, "aspect", "wide")
    assert f.severity == Severity.severe and f.data["kept"] < 0.5
    assert not named(result, "aspect", "face")


def test_faces_none_several_small(defects):
    _, result = defects
    assert any("no face" in f.message for f in named(result, "faces", "noface"))
    assert any("2 faces" in f.message for f in named(result, "faces", "two"))
    assert any("fills" in f.message for f in named(result, "faces", "far"))
    for good in ("face", "flip", "tilt", "grace"):
        assert not named(result, "faces", good), good


def test_identity_outlier_is_the_other_person(defects):
    _, result = defects
    identity = [f for f in result.findings if f.check == "identity"]
    assert [f.files[0].stem for f in identity] == ["grace"]
    assert identity[0].severity == Severity.severe and identity[0].data["median_distance"] > 0.6


def test_captions(defects):
    _, result = defects
    (missing,) = [f for f in result.findings if f.check == "captions"]
    assert {p.stem for p in missing.files} == {"nocaption"}  # the broken file is not an image the run reads
    (trigger,) = named(result, "trigger", "notrigger")
    assert trigger.severity == Severity.severe and len(trigger.files) == 1
    (long,) = named(result, "caption length", "long")
    assert long.data["tokens"] > 75 and "flag" in long.data["cut"]
    (words,) = [f for f in result.findings if f.check == "caption words"]
    assert words.data["words"] == ["orange", "suit"]  # in every caption; the trigger and class words are not listed
    (same,) = [f for f in result.findings if f.check == "caption identical"]
    assert {p.stem for p in same.files} == {"flip", "tilt"}  # face and face_copy: the duplicate finding says it


def test_balance(defects):
    _, result = defects
    balance = [f.message for f in result.findings if f.check == "balance"]
    assert any("180 samples" in m and "1_ohwx cat only 2" in m for m in balance)
    assert any("class set 1_woman has 1 images" in m for m in balance)
    rows = {r["set"]: r for r in result.sets}
    assert rows["10_sks woman"]["samples"] == 10 * len(
        [i for i in result.datasets[0].items if i.name == "10_sks woman"]
    )


def test_reports_worst_first_and_json(defects, tmp_path):
    from sdft.prep.doctor.report import text_lines, write_json

    _, result = defects
    severities = [f.severity for f in result.findings]
    assert severities == sorted(severities, reverse=True)
    lines = text_lines(result)
    assert lines[0].startswith("Doctor: ") and any(line.startswith("[SEVERE] identity") for line in lines)
    data = json.loads(write_json(result, tmp_path / "r.json").read_text())
    assert data["counts"]["severe"] == len(result.severe) and data["findings"][0]["severity"] == "severe"


def test_cli_strict_exit_status_out_and_move(tmp_path, capsys):
    root = tmp_path / "photos"
    write_clean(root)
    args = ["data", "doctor", str(root), "--no-faces", "--set", "resolution=256", "--set", "enable_bucket=true"]
    args += ["--set", "min_bucket_reso=128"]
    assert main(args + ["--strict", "--out", str(tmp_path / "r1")]) == 0
    (root / "bad.png").write_bytes(b"not a png")
    before = tree(root)
    assert main(args + ["--strict", "--out", str(tmp_path / "r2")]) == 1
    assert tree(root) == before  # reports went to --out
    assert json.loads((tmp_path / "r2" / "report.json").read_text())["counts"]["severe"] == 1
    assert main(args + ["--out", str(root / "reports")]) == 2  # never inside the dataset
    assert "never writes into a dataset" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "r3"), "--move-to", str(tmp_path / "moved")]) == 0
    assert (tmp_path / "moved" / "bad.png").is_file() and not (root / "bad.png").exists()
    assert set(tree(root)) == set(before) - {"bad.png"}


def test_config_name_reads_the_run_config_phases(tmp_path):
    from helpers.config import CONF_DIR

    from sdft.prep.doctor.run_config import compose_run_config, from_run_config

    root = tmp_path / "photos"
    write_clean(root)
    cfg = compose_run_config(
        "config", ["model=tiny", f"data.instance_dir={root}", "data.instance_prompt=x"], str(CONF_DIR)
    )
    (data,) = from_run_config(cfg)
    assert data.settings.resolution == 64 and {i.bucket for i in data.items} == {(64, 64)}  # the tiny base's size
    with pytest.raises(ConfigError, match="no .*nope.yaml"):
        compose_run_config("nope", [], str(CONF_DIR))


def test_caption_tokens_exact_with_a_tokenizer_and_a_lower_bound_without():
    from helpers.config import ROOT

    from sdft.prep.doctor.captions import MAX_TOKENS, TokenCounter, load_tokenizer

    tokenizer = load_tokenizer(str(ROOT / "sdft" / "toy" / "model"))  # a model folder: its tokenizer/ is used
    exact, estimate = TokenCounter(tokenizer), TokenCounter()
    text = "a red dog with spots, " * 15 + "standing near the house"
    n, cut = exact.cut(text)
    assert n == len(tokenizer(text, padding=False, truncation=False).input_ids) - 2 > MAX_TOKENS and cut.endswith(
        "near the house"
    )
    m, rough_cut = estimate.cut(text)
    assert MAX_TOKENS < m <= n and rough_cut.endswith("standing near the house")
    assert exact.cut("a red dog") == (3, "")
    with pytest.raises(ConfigError, match="no CLIP tokenizer"):
        load_tokenizer(str(ROOT / "docs"))


def test_files_that_are_not_images_are_noted(tmp_path):
    root = tmp_path / "set"
    write_clean(root)
    (root / "notes.md").write_text("shot list", encoding="utf-8")
    result = doctor([from_data_settings(load_data_config(str(root), "x", []), "s")], DoctorOptions(False, False))
    (f,) = [f for f in result.findings if f.check == "ignored"]
    assert f.severity == Severity.info and [p.name for p in f.files] == ["notes.md"]


def test_move_list_is_severe_image_findings_only(defects):
    from sdft.prep.doctor.move import to_move

    _, result = defects
    stems = {p.stem for p in to_move(result.findings)}
    assert {"broken", "blurry", "bright", "small", "wide", "grace"} <= stems
    assert "notrigger" not in stems and "face" not in stems  # a caption finding, a good image


@pytest.mark.parametrize(
    "model, native",
    [
        ({"path": "tiny"}, 64),
        ({"path": "sd2_tiny", "family": "sd2"}, 64),
        ({"path": "runwayml/stable-diffusion-v1-5"}, 512),
        ({"path": "stabilityai/stable-diffusion-2-1", "family": "sd2"}, 768),
        ({"path": "stabilityai/stable-diffusion-2-1-base", "family": "sd2"}, 512),
        ({"path": "/models/my_base.safetensors", "family": "sdxl"}, 1024),
        ({"path": "SG161222/RealVisXL_V4.0"}, 1024),
    ],
)
def test_the_native_size_guessed_before_loading_is_the_familys(model, native):
    """Null data sizes follow the base's native size; before any load the doctor asks the family (sd21_base: 512)."""
    from sdft.prep.doctor.inputs import native_size

    assert native_size(model) == native


def test_an_image_enlarged_only_because_the_training_size_is_above_the_bases_names_the_resolution(tmp_path):
    """The toy base (32 px) with a 64 px training size (a data preset's): the toy subject's 32 px images are enlarged
    x2, and the first fix is data.resolution, not a larger original (the UI's Train tab blocked on these)."""
    from helpers.config import ROOT

    from sdft.prep.doctor.run import cheap

    settings = load_data_config(str(ROOT / "datasets" / "toy_subject"), "a sks dog", ["resolution=64"])
    found = [f for f in cheap(from_data_settings(settings, "set", native=32)) if f.check == "resolution"]
    assert found and all(f.severity == Severity.severe for f in found)
    assert all("data.resolution=32" in f.advice for f in found)
    at_sd = [f for f in cheap(from_data_settings(settings, "set", native=512)) if f.check == "resolution"]
    assert at_sd and not any("data.resolution=" in f.advice for f in at_sd)  # an SD 1.5 base: the image is too small
