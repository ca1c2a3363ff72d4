"""Rule 3: aspect-ratio buckets, the bucketed batch plan (instance + class together), epochs and repeats."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
import torch

from helpers.images import noise_image
from sdft.config import DataConfig
from sdft.data.buckets import BucketBatchSampler, assign_bucket, make_buckets, plan_buckets
from sdft.data.datamodule import DreamBoothDataModule, class_examples, scan_dataset, training_settings


class FakeTokenizer:
    model_max_length = 8

    def __call__(self, prompt, **kw):
        ids = torch.tensor([[len(prompt)] * self.model_max_length])
        return type("T", (), {"input_ids": ids})()


def test_buckets_respect_area_step_and_limits():
    buckets = make_buckets(512, 256, 1024, 64)
    assert (512, 512) in buckets and (768, 320) in buckets and (320, 768) in buckets
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0 and 256 <= w <= 1024 and 256 <= h <= 1024 and w * h <= 512 * 512


def test_images_go_to_the_closest_aspect():
    buckets = make_buckets(512, 256, 1024, 64)
    assert assign_bucket((1000, 1000), buckets, 512) == (512, 512)
    w, h = assign_bucket((1600, 900), buckets, 512)
    assert w > h and abs(w / h - 16 / 9) < 0.15
    w, h = assign_bucket((600, 1200), buckets, 512)
    assert h > w and abs(h / w - 2) < 0.25  # 320x704 is the closest step-64 bucket
    assert assign_bucket((200, 130), buckets, 512, 64, no_upscale=True) == (192, 128)  # own size, rounded down
    assert assign_bucket((2000, 2000), buckets, 512, 64, no_upscale=True) == (512, 512)  # large: normal bucket


def test_square_without_buckets():
    cfg = DataConfig(resolution=64)
    assert plan_buckets([(100, 30), (30, 100)], cfg) == [(64, 64), (64, 64)]


def test_sampler_batches_one_bucket_repeats_and_determinism():
    buckets = [(64, 64), (64, 64), (96, 32), (96, 32), (96, 32), (32, 96)]
    repeats = [1, 1, 2, 2, 2, 3]
    pools = [(0, 1)] * 6
    sampler = BucketBatchSampler(buckets, repeats, pools, batch_size=2, seed=5)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(sampler) == 1 + 3 + 2  # ceil(2/2) + ceil(6/2) + ceil(3/2)
    for plan in first:
        assert len({buckets[i] for i, _ in plan.pairs}) == 1 and plan.size == buckets[plan.pairs[0][0]]
        assert all(j in (0, 1) for _, j in plan.pairs)
    counts = Counter(i for plan in first for i, _ in plan.pairs)
    assert counts == {i: r for i, r in enumerate(repeats)}  # an epoch = every image x its repeats
    assert [p.pairs for p in first] != [p.pairs for p in second]  # reshuffled per epoch
    again = BucketBatchSampler(buckets, repeats, pools, batch_size=2, seed=5)
    assert list(again) == first  # deterministic under the seed
    other = BucketBatchSampler(buckets, repeats, pools, batch_size=2, seed=6)
    assert [p.pairs for p in other] != [p.pairs for p in first]


def test_class_images_pair_within_their_class_and_cycle():
    sampler = BucketBatchSampler([(64, 64)] * 4, [1] * 4, [(0, 1), (0, 1), (2,), ()], batch_size=1, seed=0)
    seen = Counter()
    for _ in range(3):
        for plan in sampler:
            ((i, j),) = plan.pairs
            assert j in {0: (0, 1), 1: (0, 1), 2: (2,), 3: (-1,)}[i]
            seen[j] += 1
    assert seen[0] == seen[1] == 3  # class images of a class are used evenly across epochs


def test_datamodule_batches_mix_instance_and_class_in_one_bucket(tmp_path, caplog):
    for k, size in enumerate([(96, 48), (100, 50), (48, 96), (40, 40)]):
        noise_image(tmp_path / "inst" / f"{k}.png", size=size, seed=k)
    classes = [noise_image(tmp_path / "cls" / f"c{k}.png", size=(64, 64), seed=10 + k) for k in range(2)]
    cfg = DataConfig(
        instance_dir=str(tmp_path / "inst"),
        instance_prompt="photo of sks thing",
        resolution=64,
        enable_bucket=True,
        min_bucket_reso=32,
        max_bucket_reso=128,
        bucket_reso_steps=32,
        batch_size=2,
        repeats=2,
    )
    instances = scan_dataset(cfg).examples
    with caplog.at_level(logging.WARNING):
        dm = DreamBoothDataModule(
            training_settings(cfg), FakeTokenizer(), instances, class_examples(classes, "photo of a thing"), 0
        )
    assert "upscaled" in caplog.text and "3.png" in caplog.text  # 40x40 < its 64x64 bucket
    assert sorted(set(dm.buckets)) == [(32, 96), (64, 64), (96, 32)]
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert sum(int((~b["is_prior"]).sum()) for b in batches) == 8  # 4 images x 2 repeats
    for b in batches:
        n = int((~b["is_prior"]).sum())
        assert b["pixel_values"].shape[0] == 2 * n and b["is_prior"].tolist() == [False] * n + [True] * n
        assert b["pixel_values"].shape[-2:] in {(32, 96), (64, 64), (96, 32)}
        assert b["loss_weight"].tolist() == [1.0] * (2 * n)
    assert {tuple(b["pixel_values"].shape[-2:]) for b in batches} == {(32, 96), (64, 64), (96, 32)}


def test_bad_bucket_settings_raise():
    with pytest.raises(ValueError):
        make_buckets(512, 1024, 256, 64)


def test_null_sizes_follow_the_models_native_size():
    """data.resolution / bucket limits left null: SD 1.x keeps 512 and kohya's 256..1024; SDXL gets 1024 and its
    usual bucket list (64-px steps, area <= 1024², from 512x2048 to 2048x512); set values are kept."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from sdft.data.buckets import native_resolution, with_native_sizes
    from sdft.models.sd15_arch import SD15_UNET_CONFIG
    from sdft.models.sdxl_arch import SDXL_UNET_CONFIG

    def pipe(unet_config):
        return SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(**unet_config)), vae_scale_factor=8)

    sd1, sdxl = native_resolution(pipe(SD15_UNET_CONFIG)), native_resolution(pipe(SDXL_UNET_CONFIG))
    assert (sd1, sdxl) == (512, 1024)
    sizes = lambda c: (c.resolution, c.min_bucket_reso, c.max_bucket_reso)  # noqa: E731
    assert sizes(with_native_sizes(OmegaConf.structured(DataConfig), sd1)) == (512, 256, 1024)
    xl = with_native_sizes(OmegaConf.structured(DataConfig), sdxl)
    assert sizes(xl) == (1024, 512, 2048)
    buckets = make_buckets(xl.resolution, xl.min_bucket_reso, xl.max_bucket_reso, xl.bucket_reso_steps)
    usual = [(1024, 1024), (1152, 896), (1216, 832), (1344, 768), (1536, 640), (1728, 576), (2048, 512)]
    assert set(usual) | {(h, w) for w, h in usual} <= set(buckets)
    assert all(w * h <= 1024**2 and w % 64 == 0 and h % 64 == 0 and min(w, h) >= 512 for w, h in buckets)
    assert assign_bucket((1920, 1080), buckets, 1024) == (1344, 768)  # a 16:9 photo
    kept = OmegaConf.structured(DataConfig(resolution=768, min_bucket_reso=256, max_bucket_reso=1024))
    assert sizes(with_native_sizes(kept, sdxl)) == (768, 256, 1024)
