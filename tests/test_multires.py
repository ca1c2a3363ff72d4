"""Issue 32 item 2: multi-resolution datasets: the same or different folders at several resolutions in one run
(data.resolutions, a concept's resolution, a kohya TOML's per-[[datasets]] resolution); buckets, latent caches and the
data report per resolution; batches never mix resolutions."""

from __future__ import annotations

import logging

import pytest

from helpers.images import noise_image
from sdft.config import ConceptConfig, DataConfig
from sdft.cli.data_check import main as check_main
from sdft.data.datamodule import DreamBoothDataModule, scan_dataset, split_validation, training_settings
from sdft.data.folders import check_data_config, data_settings, resolve_concepts
from sdft.errors import ConfigError


def images(folder, n=3, size=(96, 64), seed=0):
    for k in range(n):
        noise_image(folder / f"i{k}.png", size=size, seed=seed + k)
    return folder


def module(cfg: DataConfig) -> DreamBoothDataModule:
    report = scan_dataset(cfg)
    return DreamBoothDataModule(training_settings(cfg), None, report.examples, [], seed=0)


def test_the_same_folder_at_several_resolutions(tmp_path):
    cfg = DataConfig(
        instance_dir=str(images(tmp_path / "ds")), instance_prompt="p", resolution=64, resolutions=[64, 96]
    )
    dm = module(cfg)
    assert len(dm.instances) == 6 and dm.resolution_counts() == {64: 3, 96: 3}  # scanned once, sampled at both
    assert sorted(set(dm.buckets)) == [(64, 64), (96, 96)]
    batches = list(dm.sampler())
    assert len(batches) == 6 and {b.size for b in batches} == {(64, 64), (96, 96)}
    with_buckets = module(
        DataConfig(
            instance_dir=str(tmp_path / "ds"),
            instance_prompt="p",
            resolution=64,
            resolutions=[64, 128],
            enable_bucket=True,
            min_bucket_reso=32,
            max_bucket_reso=256,
            bucket_reso_steps=32,
        )
    )
    assert with_buckets.bucket_counts(64) == {(64, 64): 3}  # at 64 px the 3:2 images are closest to a square
    assert with_buckets.bucket_counts(128) == {(160, 96): 3}  # at 128 px: a 3:2-ish bucket of area <= 128^2
    # a held-out image is held out at every resolution (never trained on)
    train, held = split_validation(dm.instances, 0.34, seed=0)
    assert len(held) == 1 and held[0].path not in {e.path for e in train} and len(train) == 4


def test_different_folders_at_different_resolutions(tmp_path):
    cfg = DataConfig(
        concepts=[
            ConceptConfig(instance_dir=str(images(tmp_path / "face", 2)), instance_prompt="sks face", resolution=96),
            ConceptConfig(instance_dir=str(images(tmp_path / "body", 3, seed=5)), instance_prompt="sks body"),
        ],
        resolution=64,
    )
    dm = module(cfg)
    assert dm.resolution_counts() == {64: 3, 96: 2}
    assert {(ex.concept.name, b) for ex, b in zip(dm.instances, dm.buckets)} == {("face", (96, 96)), ("body", (64, 64))}
    with pytest.raises(ConfigError, match="multiple of 8"):
        check_data_config(DataConfig(instance_dir="x", resolutions=[64, 100]), False)


def test_kohya_toml_datasets_at_their_own_resolutions(tmp_path, caplog):
    images(tmp_path / "img")
    (tmp_path / "d.toml").write_text(
        "[general]\nbatch_size = 1\n"
        "[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = 'img'\nclass_tokens = 'sks dog'\n"
        "[[datasets]]\nresolution = [96, 96]\n[[datasets.subsets]]\nimage_dir = 'img'\nclass_tokens = 'sks dog'\n"
    )
    with caplog.at_level(logging.WARNING):
        settings = data_settings(DataConfig(kohya_toml=str(tmp_path / "d.toml")))
        low, high = resolve_concepts(settings)
    assert "differ" not in caplog.text  # several resolutions are supported, not warned about
    assert settings.resolution == 64 and (low.resolution, high.resolution) == (64, 96)
    dm = module(DataConfig(kohya_toml=str(tmp_path / "d.toml")))
    assert dm.resolution_counts() == {64: 3, 96: 3} and sorted(set(dm.buckets)) == [(64, 64), (96, 96)]


def test_data_check_reports_each_resolution(tmp_path, capsys):
    images(tmp_path / "ds")
    rc = check_main(
        [str(tmp_path / "ds"), "--prompt", "p", "--out", str(tmp_path / "o"), "--set", "resolution=64"]
        + ["--set", "resolutions=[64,96]"]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "multi-resolution" in out
    assert "resolution 64: 3 images" in out and "resolution 96: 3 images" in out
    assert "96x96: 3 images" in out and "64x64: 3 images" in out


def test_a_multi_resolution_run_caches_latents_per_resolution(fast_config, tmp_path):
    from sdft.run.train import run

    cache = tmp_path / "latents"
    summary = run(
        fast_config(
            f"data.instance_dir={images(tmp_path / 'ds', 2, size=(80, 80))}",
            "data.instance_prompt=photo of sks dog",
            "prior=none",
            "data.resolutions=[64,96]",
            "data.cache_latents=true",
            "data.cache_to_disk=true",
            f"data.cache_dir={cache}",
            "trainer.max_steps=4",
            "callbacks.validation_seeds=[]",
        )
    )
    assert summary["steps"] == 4 and summary["instance_images"] == 4  # 2 images x 2 resolutions
    assert len(list(cache.glob("*.safetensors"))) == 4  # one latent per image and resolution
