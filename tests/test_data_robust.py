"""Rule 6: odd images are loaded correctly or rejected by name; nothing is dropped silently."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from helpers.images import noise_image, odd_folder
from sdft.config import DataConfig
from sdft.data.datamodule import scan_dataset
from sdft.data.images import load_rgb
from sdft.errors import DataError


def test_each_odd_kind_loads_as_expected(tmp_path):
    f = odd_folder(tmp_path, with_bad=False)
    assert load_rgb(f["exif"]).size == (20, 40)  # EXIF rotation applied
    assert load_rgb(f["rgba"]).getpixel((0, 0)) == (255, 255, 255)  # transparent -> background
    assert load_rgb(f["rgba"], background=(0, 0, 0)).getpixel((0, 0)) == (0, 0, 0)
    assert load_rgb(f["la"]).getpixel((0, 0)) == (255, 255, 255)
    assert load_rgb(f["palette"]).getpixel((0, 0)) == (255, 255, 255)  # P with transparency
    assert load_rgb(f["gray"]).getpixel((0, 0)) == (100, 100, 100)
    r, g, b = load_rgb(f["cmyk"]).getpixel((0, 0))
    assert r < 60 and g > 200 and b > 200  # cyan
    assert Image.open(f["deep16"]).mode.startswith("I")
    assert load_rgb(f["deep16"]).getpixel((0, 0)) == (128, 128, 128)  # 16-bit scaled, not clipped to white
    assert load_rgb(f["unicode"]).size == (48, 40)


def test_huge_jpeg_is_decoded_reduced(tmp_path):
    path = noise_image(tmp_path / "big.jpg", size=(2400, 1600), seed=0, quality=50)
    img = load_rgb(path, target=(64, 64))
    assert img.size[0] < 600 and min(img.size) >= 128  # PIL draft: decoded at 1/4 scale or less, still >= 2x target
    assert load_rgb(path).size == (2400, 1600)


def test_bad_files_are_all_named_before_training(tmp_path):
    f = odd_folder(tmp_path)
    cfg = DataConfig(instance_dir=str(tmp_path), instance_prompt="photo of sks thing")
    with pytest.raises(DataError) as err:
        scan_dataset(cfg)
    text = str(err.value)
    for key in ("bad_zero", "bad_text", "bad_truncated"):
        assert f[key].name in text
    assert "3 of" in text and "on_bad_images=skip" in text
    assert "exif.jpg" not in text


def test_skip_keeps_every_good_file_and_reports_the_rest(tmp_path, caplog):
    f = odd_folder(tmp_path)
    cfg = DataConfig(instance_dir=str(tmp_path), instance_prompt="photo of sks thing", on_bad_images="skip")
    with caplog.at_level(logging.WARNING):
        report = scan_dataset(cfg)
    good = {k for k in f if not k.startswith("bad_") and k != "ignored"}
    assert {ex.path for ex in report.examples} == {f[k] for k in good}
    assert {p for p, _ in report.bad} == {f[k] for k in f if k.startswith("bad_")}
    assert report.ignored == [f["ignored"]] and "notes.bin" in caplog.text  # non-images reported, not dropped silently
    assert [sorted(g) for g in report.duplicates] == [sorted([f["dup_a"], f["dup_b"]])]
    assert "identical files" in caplog.text and "skipping 3" in caplog.text
    sizes = {ex.path.name: ex.size for ex in report.examples}
    assert sizes["exif.jpg"] == (20, 40) and sizes["huge.jpg"] == (2400, 1600)


def test_odd_folder_trains_or_is_rejected_by_name(fast_config, tmp_path):
    from sdft.run.train import run

    f = odd_folder(tmp_path / "odd")
    with pytest.raises(DataError) as err:
        run(fast_config(f"data.instance_dir={tmp_path / 'odd'}", "data.instance_prompt=photo of sks thing"))
    assert all(f[k].name in str(err.value) for k in f if k.startswith("bad_"))
    summary = run(
        fast_config(
            f"data.instance_dir={tmp_path / 'odd'}",
            "data.instance_prompt=photo of sks thing",
            "data.on_bad_images=skip",
            "data.enable_bucket=true",
            "data.min_bucket_reso=32",
            "data.max_bucket_reso=128",
            "trainer.max_steps=2",
        )
    )
    assert summary["steps"] == 2 and summary["instance_images"] == 11
    assert np.isfinite(summary["final_metrics"]["train/loss"])
