"""Rule 1: kohya folder names, the concepts list, kohya dataset TOML import; both train through sdft.run.train.run."""

from __future__ import annotations

import logging

import pytest

from helpers.images import noise_image
from sdft.config import ConceptConfig, DataConfig
from sdft.data.datamodule import scan_dataset
from sdft.data.folders import data_settings, parse_kohya_name, resolve_concepts
from sdft.data.kohya_toml import load_kohya_toml
from sdft.errors import ConfigError


def kohya_tree(root, n=2, seed=0):
    for k in range(n):
        noise_image(root / "img" / "10_sks dog" / f"d{k}.png", seed=seed + k)
        noise_image(root / "img" / "5_ohwx cat" / f"c{k}.jpg", size=(64, 40), seed=seed + 10 + k)
        noise_image(root / "reg" / "1_dog" / f"r{k}.png", size=(40, 40), seed=seed + 20 + k)
    (root / "img" / "10_sks dog" / "d0.txt").write_text("a dog on grass")
    return root


def test_parse_kohya_names():
    assert parse_kohya_name("10_sks dog") == (10, "sks dog")
    assert parse_kohya_name("1_dog") == (1, "dog")
    assert parse_kohya_name("faces") is None and parse_kohya_name("10_") is None


def test_kohya_folder_tree_with_reg_folders(tmp_path):
    kohya_tree(tmp_path)
    cfg = DataConfig(instance_dir=str(tmp_path / "img"), class_dir=str(tmp_path / "reg"))
    report = scan_dataset(cfg)
    by_name = {c.name: c for c in report.concepts}
    dog, cat, reg = by_name["10_sks dog"], by_name["5_ohwx cat"], by_name["1_dog"]
    assert (dog.repeats, dog.trigger, dog.class_prompt, dog.prompt) == (10, "sks", "dog", "sks dog")
    assert (cat.repeats, cat.trigger, cat.class_key) == (5, "ohwx", "cat")
    assert reg.is_reg and reg.class_key == "dog" and not dog.is_reg
    prompts = sorted(ex.prompt for ex in report.examples)
    assert prompts == ["ohwx cat", "ohwx cat", "sks dog", "sks, a dog on grass"]  # trigger ensured in captions
    assert len(report.reg_examples) == 2


def test_concepts_list(tmp_path):
    for k in range(2):
        noise_image(tmp_path / "a" / f"{k}.png", seed=k)
        noise_image(tmp_path / "b" / f"{k}.png", seed=5 + k)
    cfg = DataConfig(
        concepts=[
            ConceptConfig(
                instance_dir=str(tmp_path / "a"),
                instance_prompt="photo of sks dog",
                class_prompt="photo of a dog",
                repeats=3,
                loss_weight=2.0,
            ),
            ConceptConfig(
                instance_dir=str(tmp_path / "b"), instance_prompt="photo of ohwx cat", class_prompt="photo of a cat"
            ),
        ],
        repeats=1,
    )
    a, b = resolve_concepts(cfg)
    assert (a.repeats, a.loss_weight, a.class_key, b.repeats) == (3, 2.0, "photo of a dog", 1)
    with pytest.raises(ConfigError, match="instance_prompt"):
        resolve_concepts(DataConfig(concepts=[ConceptConfig(instance_dir=str(tmp_path / "a"))]))


TOML = """
[general]
shuffle_caption = true
caption_extension = '.caption'
keep_tokens = 1
color_aug = false

[[datasets]]
resolution = 64
batch_size = 2
enable_bucket = true
min_bucket_reso = 32
max_bucket_reso = 128
bucket_reso_steps = 32

  [[datasets.subsets]]
  image_dir = 'img/10_sks dog'
  class_tokens = 'sks dog'
  num_repeats = 3
  flip_aug = true

  [[datasets.subsets]]
  image_dir = 'img/5_ohwx cat'
  keep_tokens = 0

  [[datasets.subsets]]
  is_reg = true
  image_dir = 'reg/1_dog'
  class_tokens = 'dog'
  num_repeats = 1
"""


def test_kohya_toml_import(tmp_path, caplog):
    kohya_tree(tmp_path)
    (tmp_path / "dataset.toml").write_text(TOML)
    with caplog.at_level(logging.WARNING):
        ds = load_kohya_toml(tmp_path / "dataset.toml")
    assert "color_aug" in caplog.text  # unsupported keys are named, not silently dropped
    assert ds.settings == {
        "resolution": 64,
        "batch_size": 2,
        "enable_bucket": True,
        "min_bucket_reso": 32,
        "max_bucket_reso": 128,
        "bucket_reso_steps": 32,
    }
    settings = data_settings(DataConfig(kohya_toml=str(tmp_path / "dataset.toml")))
    assert settings.resolution == 64 and settings.enable_bucket
    dog, cat, reg = resolve_concepts(settings)
    assert (dog.repeats, dog.flip, dog.captions.shuffle, dog.captions.keep_tokens, dog.caption_extension) == (
        3,
        True,
        True,
        1,
        ".caption",
    )
    assert (cat.repeats, cat.trigger, cat.captions.keep_tokens, cat.flip) == (5, "ohwx", 0, False)  # from folder name
    assert reg.is_reg and reg.class_key == dog.class_key == "dog"


def test_kohya_toml_errors_name_the_problem(tmp_path):
    (tmp_path / "bad.toml").write_text("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'nope'\n")
    with pytest.raises(ConfigError, match="nope"):
        resolve_concepts(DataConfig(kohya_toml=str(tmp_path / "bad.toml")))
    (tmp_path / "broken.toml").write_text("[[datasets]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_kohya_toml(tmp_path / "broken.toml")


def test_kohya_toml_trains(fast_config, tmp_path):
    from sdft.run.train import run

    kohya_tree(tmp_path / "ds")
    (tmp_path / "ds" / "dataset.toml").write_text(TOML)
    summary = run(
        fast_config("data=kohya", f"data.kohya_toml={tmp_path / 'ds' / 'dataset.toml'}", "trainer.max_steps=2")
    )
    assert summary["steps"] == 2 and summary["instance_images"] == 4 and summary["class_images"] == 2


def test_kohya_folder_tree_trains(fast_config, tmp_path):
    from sdft.run.train import run

    kohya_tree(tmp_path / "ds")
    summary = run(
        fast_config(
            "data=kohya",
            f"data.instance_dir={tmp_path / 'ds' / 'img'}",
            f"data.class_dir={tmp_path / 'ds' / 'reg'}",
            "prior=default",
            "trainer.max_steps=2",
        )
    )
    # dog: the 2 given reg images; cat has none: 2 generated into a kohya reg folder next to them, reused next time
    assert summary["steps"] == 2 and summary["instance_images"] == 4 and summary["class_images"] == 4
    assert len(list((tmp_path / "ds" / "reg" / "1_cat").glob("class_*.png"))) == 2
    assert "train/prior_loss" in summary["final_metrics"]
