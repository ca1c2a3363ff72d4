"""Issue 32 item 3: per-tag dropout, several captions per image (lines of a caption file), `{a|b|c}` wildcards, all
respecting keep_tokens, seeded per sample (so a resumed run draws the same captions), read from a kohya TOML too."""

from __future__ import annotations

import random
import shutil

import pytest

from helpers.config import EXAMPLE_SUBJECT
from helpers.images import noise_image
from test_resume import cut_back, same_lora
from omegaconf import OmegaConf

from sdft.run.checks import check_ranges
from sdft.config import DataConfig
from sdft.data.captions import CaptionOptions, process_caption
from sdft.data.datamodule import scan_dataset
from sdft.data.folders import data_settings, resolve_concepts
from sdft.errors import ConfigError
from sdft.run.train import run

CAPTION = "sks dog, red collar, grass, sunny, running, close-up"


def draws(caption: str, opts: CaptionOptions, n: int = 400) -> list[str]:
    return [process_caption(caption, opts, random.Random(k)) for k in range(n)]


def test_tag_dropout_drops_tags_but_never_the_kept_ones():
    opts = CaptionOptions(keep_tokens=2, tag_dropout=0.5)
    outs = draws(CAPTION, opts)
    kept_share = sum(len(o.split(", ")) - 2 for o in outs) / (4 * len(outs))
    assert 0.4 < kept_share < 0.6  # each of the 4 other tags survives about half the time
    assert all(o.split(", ")[:2] == ["sks dog", "red collar"] for o in outs)
    assert all(o.split(", ")[2:] == [t for t in CAPTION.split(", ")[2:] if t in o.split(", ")] for o in outs)  # order
    assert not opts.fixed and not opts.fixed_for("sks dog")
    bad = OmegaConf.structured(DataConfig(instance_dir="x", caption_tag_dropout_rate=1.0))
    with pytest.raises(ConfigError, match=r"data\.caption_tag_dropout_rate=1\.0: must be in \[0, 1\)"):
        check_ranges(bad, DataConfig, "data.")


def test_wildcards_draw_each_option_and_keep_tokens_count_after_them():
    opts = CaptionOptions(keep_tokens=1, shuffle=True, wildcards=True)
    outs = draws("sks {dog|cat}, {red|blue} collar, grass, sunny", opts)
    assert {o.split(", ")[0] for o in outs} == {"sks dog", "sks cat"}  # the kept first tag, its wildcard drawn
    assert {t for o in outs for t in o.split(", ") if "collar" in t} == {"red collar", "blue collar"}
    assert len({o for o in outs}) > 8  # shuffled too
    assert all("{" not in o and "|" not in o for o in outs)
    plain = CaptionOptions(wildcards=True)
    assert plain.fixed_for("a {b} c") and not plain.fixed_for("a {b|c}") and not plain.fixed
    assert process_caption("sks {dog|cat}", CaptionOptions(), random.Random(0)) == "sks {dog|cat}"  # off: literal


def test_caption_file_lines_are_variants_one_drawn_per_sample(tmp_path):
    noise_image(tmp_path / "a.png", seed=0), noise_image(tmp_path / "b.png", seed=1)
    (tmp_path / "a.txt").write_text("a dog on a beach,  sunny\n\nclose-up of a dog, grass\n")
    (tmp_path / "b.txt").write_text("one line only\n")
    base = dict(instance_dir=str(tmp_path), instance_prompt="photo of sks dog", trigger="sks")
    joined = {ex.path.name: ex.prompt for ex in scan_dataset(DataConfig(**base)).examples}
    assert joined["a.png"] == "sks, a dog on a beach, sunny close-up of a dog, grass"  # off: one caption, as before
    report = scan_dataset(DataConfig(**base, caption_variants=True, keep_tokens=1, caption_tag_dropout_rate=0.3))
    a, b = sorted(report.examples, key=lambda ex: ex.path.name)
    assert a.prompt == "sks, a dog on a beach, sunny\nsks, close-up of a dog, grass"  # trigger ensured per variant
    outs = draws(a.prompt, a.caption_options)
    tags = {t for o in outs for t in o.split(", ")}
    assert tags == {"sks", "a dog on a beach", "sunny", "close-up of a dog", "grass"}  # both variants drawn
    assert not any("beach" in o and "grass" in o for o in outs)  # one variant per draw, never both
    assert all(o.startswith("sks") for o in outs)  # keep_tokens=1 holds the trigger in every variant
    only = CaptionOptions(variants=True)
    assert only.fixed_for(b.prompt) and not only.fixed_for(a.prompt)


def test_kohya_toml_reads_tag_dropout_and_wildcards(tmp_path):
    (tmp_path / "img").mkdir()
    noise_image(tmp_path / "img" / "a.png")
    (tmp_path / "d.toml").write_text(
        "[general]\ncaption_tag_dropout_rate = 0.2\n[[datasets]]\n[[datasets.subsets]]\n"
        "image_dir = 'img'\nclass_tokens = 'sks dog'\nenable_wildcard = true\n"
        "[[datasets.subsets]]\nimage_dir = 'img'\nclass_tokens = 'sks dog'\ncaption_tag_dropout_rate = 0.0\n"
    )
    first, second = resolve_concepts(data_settings(DataConfig(kohya_toml=str(tmp_path / "d.toml"))))
    assert (first.captions.tag_dropout, first.captions.variants, first.captions.wildcards) == (0.2, True, True)
    assert (second.captions.tag_dropout, second.captions.variants, second.captions.wildcards) == (0.0, False, False)


LORA = "pytorch_lora_weights.safetensors"


def test_resume_is_exact_with_the_new_caption_options(fast_config, tmp_path):
    """A run cut back to its step-2 checkpoint (what a SIGKILL right after it leaves) resumes to the same LoRA."""
    subject = tmp_path / "subject"
    subject.mkdir()
    for k, name in enumerate(("face_00", "face_01")):
        shutil.copy(EXAMPLE_SUBJECT / "face" / f"{name}.png", subject)
        (subject / f"{name}.txt").write_text(
            f"sks character, {{smiling|serious}}, portrait {k}, white background\nsks character, photo, close-up\n"
        )
    opts = [
        f"data.instance_dir={subject}",
        "data.instance_prompt=photo of sks character",
        "prior=none",
        "data.caption_variants=true",
        "data.caption_wildcards=true",
        "data.caption_tag_dropout_rate=0.4",
        "data.shuffle_caption=true",
        "data.keep_tokens=1",
        "trainer.max_steps=5",
        "callbacks.checkpoint_every_n_steps=1",
        "callbacks.keep_last_k=10",
        "callbacks.validation_seeds=[]",
        "optim.lr=1e-2",
    ]
    straight = tmp_path / "straight"
    assert run(fast_config(*opts, f"output_dir={straight}"))["steps"] == 5
    cut = tmp_path / "cut"
    shutil.copytree(straight, cut)
    cut_back(cut, 2)
    assert not (cut / "main" / "lora").exists()
    assert run(fast_config(*opts, f"output_dir={cut}", "resume=auto"))["steps"] == 5
    assert same_lora(cut / "main" / "lora" / LORA, straight / "main" / "lora" / LORA) <= 1e-6
    moved = same_lora(
        cut / "main" / "checkpoints" / "step_000002" / "sdft-step000002.safetensors",
        cut / "main" / "lora" / "sdft.safetensors",
    )
    assert moved > 1e-4, "steps 3-5 changed nothing: the comparison above proves nothing"
