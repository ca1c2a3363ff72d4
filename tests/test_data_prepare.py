"""`sdft data prepare`: face / half-body crops of a real photograph (scikit-image's astronaut), the framing report,
upscaling, masks, and a dual-phase run on what it writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.photos import write_photos
from sdft.cli import main as sdft_main
from sdft.prep.faces import CascadeDetector, Face, main_faces, make_detector
from sdft.prep.framing import body_crop, face_crop, fit_box
from sdft.cli.data_prepare import parse_size
from sdft.prep.prepare import PrepareOptions, prepare
from sdft.prep.upscale import LanczosResizer, ModelUpscaler, load_spandrel
from sdft.errors import ConfigError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """One CLI run over the four photos: face 160 px, body 64 px, full set with short side >= 300."""
    root = tmp_path_factory.mktemp("prep")
    src, out = root / "photos", root / "out"
    write_photos(src)
    before = sorted(p.name for p in src.iterdir())
    code = sdft_main(
        [
            "data",
            "prepare",
            str(src),
            str(out),
            "--face-size",
            "160",
            "--body-size",
            "64",
            "--sets",
            "face,body,full",
            "--full-min-side",
            "300",
        ]
    )
    assert code == 0
    return src, out, before, json.loads((out / "report.json").read_text())


def test_sets_report_and_nothing_written_into_the_source(prepared):
    src, out, before, report = prepared
    assert sorted(p.name for p in src.iterdir()) == before  # preview and report went to OUT
    assert sorted(p.name for p in (out / "face").glob("*.png")) == ["close.png", "far.png", "two.png"]
    assert sorted(p.name for p in (out / "body").glob("*.png")) == ["close.png", "far.png", "two.png"]
    assert len(list((out / "full").glob("*.png"))) == 4
    assert Image.open(out / "face" / "far.png").size == (160, 160)
    assert Image.open(out / "body" / "far.png").size == (64, 64)
    assert (out / "face" / "close.txt").read_text() == "photo of sks person, smiling\n"
    assert (out / "body" / "close.txt").read_text() == "photo of sks person, smiling\n"
    assert not (out / "face" / "far.txt").exists()
    assert (out / "preview.png").is_file() and Image.open(out / "preview.png").size[0] > 0
    # the framing warnings, by name
    assert report["no_face"] == ["noface.png"]
    assert [d["file"] for d in report["several_faces"]] == ["two.png"]
    under = {d["file"] for d in report["subject_under_half"]}
    assert "far.png" in under and "close.jpg" not in under
    sizes = {i["file"]: i["size"] for i in report["images"]}
    assert sizes["far.png"] == [800, 600] and sizes["close.jpg"] == [280, 270]
    md = (out / "report.md").read_text()
    assert "## Subject fills less than 50 % of the frame" in md and "`far.png`: ~" in md
    assert "## No face found: 1" in md and "`noface.png`" in md


def test_upscaling_is_reported_with_its_factor(prepared):
    _, out, _, report = prepared
    ups = {d["file"]: d["factor"] for d in report["upscaled"]}
    close = next(i for i in report["images"] if i["file"] == "close.jpg")
    crop = next(o for o in close["outputs"] if o["set"] == "face")["crop"]
    assert ups["face/close.png"] == pytest.approx(160 / (crop[2] - crop[0]), rel=0.02) and ups["face/close.png"] > 1
    assert ups["full/close.png"] == pytest.approx(300 / 270, rel=0.01)
    assert "full/far.png" not in ups and "body/far.png" not in ups  # big enough: only shrunk
    assert Image.open(out / "full" / "close.png").size == (311, 300)
    assert report["upscaler"] == "lanczos" and "x1.11 with lanczos" in (out / "report.md").read_text()


def test_face_crop_is_centred_on_the_face_and_body_crop_is_taller(prepared):
    _, out, _, report = prepared
    detector = CascadeDetector()
    face = main_faces(detector.detect(np.asarray(Image.open(out / "face" / "close.png").convert("RGB"))))
    assert len(face) == 1
    f = face[0]
    assert abs(f.cx - 80) < 0.12 * 160 and abs(f.cy - 80) < 0.2 * 160
    assert 160 / 2.4 * 0.8 < f.w < 160 / 2.4 * 1.25  # --face-margin 2.4: the face box is ~1/2.4 of the crop
    close = next(i for i in report["images"] if i["file"] == "close.jpg")
    boxes = {o["set"]: o["crop"] for o in close["outputs"]}
    assert boxes["body"][3] - boxes["body"][1] > 1.8 * (boxes["face"][3] - boxes["face"][1])
    assert boxes["body"][1] <= close["face"][1]  # the head is inside the half-body crop


def test_masks_match_the_written_images(tmp_path):
    src = tmp_path / "photos"
    files = write_photos(src)
    files["noface"].unlink()
    files["two"].unlink()
    prepare(
        src, tmp_path / "out", PrepareOptions(face_size=(96, 96), body_size=(64, 80), masks="subject", preview=False)
    )
    for set_name, size in (("face", (96, 96)), ("body", (64, 80))):
        for stem in ("close", "far"):
            mask = np.asarray(Image.open(tmp_path / "out" / set_name / f"{stem}.mask.png"))
            assert Image.open(tmp_path / "out" / set_name / f"{stem}.png").size == size
            assert mask.shape == (size[1], size[0]) and set(np.unique(mask)) <= {0, 255}
            assert 0.1 < (mask > 0).mean() < 0.9  # subject and background both present
    face_mask = np.asarray(Image.open(tmp_path / "out" / "face" / "far.mask.png"))
    assert face_mask[48, 48] == 255  # the face (crop centre) is subject
    assert face_mask[2, 2] == 0 and face_mask[2, 93] == 0  # the grey canvas above the head is not
    prepare(src, tmp_path / "ellipse", PrepareOptions(face_size=(96, 96), sets=("face",), masks="face", preview=False))
    ellipse = np.asarray(Image.open(tmp_path / "ellipse" / "face" / "close.mask.png"))
    assert ellipse[48, 48] == 255 and ellipse[95, 0] == 0 and 0.15 < (ellipse > 0).mean() < 0.6


def test_several_faces_skip_and_input_errors(tmp_path):
    src = tmp_path / "photos"
    write_photos(src)
    report = prepare(
        src,
        tmp_path / "out",
        PrepareOptions(face_size=(64, 64), body_size=(64, 64), several_faces="skip", preview=False),
    )
    two = next(i for i in report["images"] if i["file"] == "two.png")
    assert two["outputs"] == [] and two["skipped"] == {"face": "several faces", "body": "several faces"}
    with pytest.raises(ConfigError, match="already holds images"):
        prepare(src, tmp_path / "out", PrepareOptions(preview=False))
    with pytest.raises(ConfigError, match="inside the input folder"):
        prepare(src, src / "prepared")
    with pytest.raises(ConfigError, match="no such file"):
        prepare(src, tmp_path / "o2", PrepareOptions(face_model=str(tmp_path / "missing.xml")))
    bad_xml = tmp_path / "bad.xml"
    bad_xml.write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(ConfigError, match="not an OpenCV cascade"):
        make_detector(bad_xml)
    bad_onnx = tmp_path / "yunet.onnx"
    bad_onnx.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="cannot load it as a YuNet"):
        make_detector(bad_onnx)
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        parse_size("512by512")
    assert parse_size("512x640") == (512, 640) and parse_size("256") == (256, 256)
    assert sdft_main(["data", "prepare", str(src), str(tmp_path / "o3"), "--sets", "face,legs"]) == 2
    assert not (tmp_path / "o3").exists()  # bad options stop before anything is written


def test_prepare_that_writes_no_image_exits_non_zero(tmp_path, capsys):
    """Issue 33 item 11: photos with no face give no face/body crop; that is exit 2 with one line saying why."""
    src = tmp_path / "photos"
    src.mkdir()
    for i, colour in enumerate(("gray", "teal")):
        Image.new("RGB", (96, 96), colour).save(src / f"plain{i}.png")
    assert (
        sdft_main(["data", "prepare", str(src), str(tmp_path / "out"), "--face-size", "64", "--body-size", "64"]) == 2
    )
    err = capsys.readouterr().err
    assert "wrote no image from the 2 photo(s)" in err and "2 without a detected face" in err, err
    assert "Traceback" not in err and (tmp_path / "out" / "report.md").is_file()


def test_full_set_upscales_small_images_and_reports_it(tmp_path):
    """The anime seed's case: 128 px images -> 512 px, whether or not a face is found."""
    from helpers.photos import astronaut

    src = tmp_path / "small"
    src.mkdir()
    astronaut().resize((128, 128), Image.Resampling.LANCZOS).save(src / "a.png")
    astronaut().crop((0, 300, 192, 428)).save(src / "b.png")  # 192x128, no face
    report = prepare(src, tmp_path / "out", PrepareOptions(sets=("full",), preview=False))
    assert Image.open(tmp_path / "out" / "full" / "a.png").size == (512, 512)
    assert Image.open(tmp_path / "out" / "full" / "b.png").size == (768, 512)
    assert {d["file"]: d["factor"] for d in report["upscaled"]} == {"full/a.png": 4.0, "full/b.png": 4.0}
    assert "`full/a.png` (from `a.png`): x4.00 with lanczos" in (tmp_path / "out" / "report.md").read_text()


def test_main_faces_drops_weak_and_small_detections():
    real = Face(100, 50, 90, 90, score=5.0)
    peer = Face(400, 60, 80, 80, score=4.0)
    collar = Face(200, 150, 120, 120, score=0.7)  # bigger, but a weak cascade hit
    background = Face(600, 40, 30, 30, score=5.0)  # confident, but a third of the size
    assert main_faces([collar, real, background, peer]) == [real, peer]
    assert main_faces([]) == []


def test_crop_boxes_stay_inside_the_frame():
    crop = fit_box(10, 10, 100, 100, (300, 200))
    assert crop.box == (0.0, 0.0, 100.0, 100.0) and crop.tight == 1.0
    crop = fit_box(150, 100, 400, 400, (300, 200))  # larger than the frame: shrunk, aspect kept
    assert crop.size == (200.0, 200.0) and crop.tight == 0.5
    face = Face(100, 40, 50, 50)
    assert face_crop(face, (1000, 1000), 1.0, 2.4).size == pytest.approx((120, 120))
    body = body_crop(face, (100, 1000), 0.8, 5.0)  # frame too narrow: shrunk from the bottom, top kept at the head
    assert body.box[1] == pytest.approx(40 - 0.7 * 50) and body.size == pytest.approx((100, 125))
    assert body.tight == pytest.approx(0.5)
    assert body.size[0] / body.size[1] == pytest.approx(0.8)


def test_model_upscaler_runs_the_model_only_to_grow(tmp_path):
    class TwiceModel(torch.nn.Module):  # stands in for a spandrel ImageModelDescriptor (scale 2)
        scale = 2
        calls = 0

        def forward(self, x):
            TwiceModel.calls += 1
            assert x.shape[1] == 3 and 0 <= float(x.min()) and float(x.max()) <= 1
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    up = ModelUpscaler(TwiceModel(), "twice")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    assert up.resize(img, (100, 75)).size == (100, 75) and TwiceModel.calls == 1
    assert up.resize(img, (20, 15)).size == (20, 15) and TwiceModel.calls == 1  # shrinking: Lanczos only
    assert LanczosResizer().resize(img, (80, 60)).size == (80, 60)
    weights = tmp_path / "x4.pth"
    weights.write_bytes(b"not a model")
    try:
        import spandrel  # noqa: F401
    except Exception:  # not installed (the usual case): a clear message says why and what to do
        with pytest.raises(ConfigError, match="spandrel"):
            load_spandrel(weights)
    else:
        with pytest.raises(ConfigError, match="cannot load"):
            load_spandrel(weights)
    with pytest.raises(ConfigError, match="no such file"):
        load_spandrel(tmp_path / "missing.pth")


def test_dual_phase_trains_on_the_prepared_sets(prepared, fast_config):
    from sdft.run.train import run

    _, out, _, _ = prepared
    cfg = fast_config(
        "+experiment=dual_phase",
        "model=tiny",
        "trainer=cpu",
        "trainer.enable_progress_bar=false",
        "prior=none",
        "logger=none",
        "callbacks.validation_seeds=[]",
        f"phases.0.overrides.data.instance_dir={out / 'face'}",
        f"phases.1.overrides.data.instance_dir={out / 'body'}",
        "phases.0.overrides.trainer.max_steps=2",
        "phases.1.overrides.trainer.max_steps=2",
    )
    summary = run(cfg)
    phases = {p["phase"]: p for p in summary["phases"]}
    assert list(phases) == ["face", "body"]
    for name in ("face", "body"):
        assert phases[name]["steps"] == 2 and phases[name]["instance_images"] == 3  # close, far, two
        assert Path(phases[name]["output"]).exists()
