"""Rule 2: sidecar captions (.txt / .caption), trigger word, fallback prompt, tag shuffling, dropout, report."""

from __future__ import annotations

import logging
import random

import pytest

from helpers.images import noise_image
from sdft.config import ConceptConfig, DataConfig
from sdft.data.captions import CaptionOptions, ensure_trigger, process_caption, read_captions_report
from sdft.data.datamodule import scan_dataset
from sdft.errors import DataError


def test_caption_extension_trigger_and_fallback(tmp_path):
    noise_image(tmp_path / "a.png", seed=0), noise_image(tmp_path / "b.png", seed=1)
    (tmp_path / "a.caption").write_text("a dog on a beach, sunny\n")
    cfg = DataConfig(
        concepts=[
            ConceptConfig(
                instance_dir=str(tmp_path),
                instance_prompt="photo of sks dog",
                trigger="sks",
                caption_extension="caption",
            )
        ]
    )
    report = scan_dataset(cfg)
    prompts = {ex.path.name: ex.prompt for ex in report.examples}
    assert prompts == {"a.png": "sks, a dog on a beach, sunny", "b.png": "photo of sks dog"}
    assert report.captions[str(tmp_path)].found == 1
    assert ensure_trigger("photo of SKS dog", "sks") == "photo of SKS dog"  # already there: unchanged


def test_extension_matching_nothing_is_loud_or_an_error(tmp_path, caplog):
    a = noise_image(tmp_path / "a.png")
    (tmp_path / "a.caption").write_text("x")
    with caplog.at_level(logging.WARNING):
        prompts, report = read_captions_report([a], "p", ".txt", True)
    assert prompts == ["p"] and report.others == [".caption"]
    assert "caption_extension=.caption" in caplog.text and caplog.records[-1].levelno == logging.WARNING
    with pytest.raises(DataError, match="caption_extension"):
        scan_dataset(DataConfig(instance_dir=str(tmp_path), instance_prompt="p", missing_captions="error"))


def test_shuffle_keeps_first_tokens_and_is_seeded():
    caption = "sks dog, red collar, grass, sunny, running, close-up"
    opts = CaptionOptions(shuffle=True, keep_tokens=2)
    outs = {process_caption(caption, opts, random.Random(k)) for k in range(20)}
    assert len(outs) > 1
    for out in outs:
        tags = out.split(", ")
        assert tags[:2] == ["sks dog", "red collar"] and sorted(tags) == sorted(caption.split(", "))
    assert process_caption(caption, opts, random.Random(3)) == process_caption(caption, opts, random.Random(3))
    assert process_caption(caption, CaptionOptions(), random.Random(0)) == caption


def test_caption_dropout_rate():
    opts = CaptionOptions(dropout=0.3)
    empty = sum(process_caption("sks dog", opts, random.Random(k)) == "" for k in range(2000))
    assert 500 < empty < 700
    assert not opts.fixed and CaptionOptions().fixed
