"""Masked loss (sdft/data/masks.py, sdft/training/losses.py): masks from alpha, `<stem>.mask.png` or data.mask_dir follow the
sample's bucket resize, random crop, flip and the latent cache to the same place as the subject; the loss ignores the
background when unmasked_weight=0; the image scanner never takes a mask for an image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from PIL import Image

from sdft.config import LossConfig
from sdft.data.images import list_images
from sdft.training.losses import mask_weights, per_sample_loss
from sdft.run.train import run
from helpers.wiring import prepare_for_test

W, H = 96, 64
SQUARE = (56, 16, 80, 40)  # left, top, right, bottom: a red square, off-centre so a flip moves it


def square_array(fill, background) -> np.ndarray:
    arr = np.empty((H, W, len(fill)), dtype=np.uint8)
    arr[:] = background
    left, top, right, bottom = SQUARE
    arr[top:bottom, left:right] = fill
    return arr


@pytest.fixture
def masked_folder(tmp_path):
    """Three images with the same square, each with its mask from another source."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    rgb = square_array((220, 20, 20), (20, 20, 220))
    mask = Image.fromarray(square_array((255,), (0,))[..., 0], "L")
    rgba = np.concatenate([rgb, square_array((255,), (0,))], axis=2)
    Image.fromarray(rgba, "RGBA").save(images / "alpha.png")
    Image.fromarray(rgb).save(images / "beside.png")
    mask.save(images / "beside.mask.png")
    Image.fromarray(rgb).save(images / "dir.png")
    mask.resize((W * 2, H * 2), Image.Resampling.NEAREST).save(masks / "dir.png")  # another resolution: stretched
    return images, masks


def overrides(images, masks, *extra):
    return [
        f"data.instance_dir={images}",
        f"data.mask_dir={masks}",
        "data.instance_prompt=photo of sks thing",
        "loss.masked_loss=true",
        "data.enable_bucket=true",
        "data.bucket_reso_steps=16",
        "data.min_bucket_reso=32",
        "data.random_flip=true",
        "callbacks.validation_seeds=[]",
        *extra,
    ]


def red_square(pixels: torch.Tensor) -> torch.Tensor:
    """Where the subject is in a [-1, 1] RGB sample (the white composited background is not red)."""
    return (pixels[0] > 0.3) & (pixels[1] < -0.3) & (pixels[2] < -0.3)


def batches(datamodule, epochs: int) -> list[dict]:
    datamodule.setup("fit")
    sampler = datamodule.sampler()
    return [datamodule.dataset[plan] for epoch in range(epochs) for plan in sampler.plan(epoch)]


def test_the_scanner_never_takes_a_mask_for_an_image(masked_folder):
    images, _ = masked_folder
    assert [p.name for p in list_images(images)] == ["alpha.png", "beside.png", "dir.png"]


def test_masks_follow_bucket_resize_random_crop_and_flip(fast_config, masked_folder):
    parts = prepare_for_test(fast_config(*overrides(*masked_folder, "data.center_crop=false")))
    assert parts.datamodule.buckets[0] != (64, 64), "no aspect bucket: the test would not cover the bucket resize"
    lefts = set()
    for batch in batches(parts.datamodule, 6):
        pixels, mask = batch["pixel_values"][0], batch["mask"][0, 0]
        assert mask.shape == pixels.shape[-2:]
        subject, inside = red_square(pixels), mask > 0.5
        assert subject.sum() > 100 and 0 < inside.float().mean() < 0.5
        edge = int((subject ^ inside).sum())
        assert edge <= 2 * int(subject.sum() ** 0.5) + 4, f"mask and subject disagree on {edge} pixels"
        lefts.add(int(inside.nonzero()[:, 1].min()))
    assert len(lefts) >= 2, "the square never moved: no flip or crop was exercised"


def test_masks_match_cached_latents_in_latent_space(fast_config, masked_folder):
    args = overrides(*masked_folder, "data.center_crop=true")
    plain = prepare_for_test(fast_config(*args))
    cached = prepare_for_test(fast_config(*args, "data.cache_latents=true"))
    cached.datamodule.build_caches(cached.module)
    assert cached.datamodule.latents is not None
    for a, b in zip(batches(plain.datamodule, 3), batches(cached.datamodule, 3)):
        assert "latent_dist" in b and "pixel_values" not in b
        assert torch.equal(a["mask"], b["mask"])  # the same spec (crop, flip, size) keys both
        latents = torch.zeros(1, 4, a["mask"].shape[-2] // 8, a["mask"].shape[-1] // 8)
        assert b["latent_dist"].shape[-2:] == latents.shape[-2:]
        at_latent = mask_weights(b["mask"], latents, 0.0)[0, 0]
        subject = F.avg_pool2d(red_square(a["pixel_values"][0]).float()[None], 8)[0]
        assert torch.allclose(at_latent, subject, atol=0.15), "the mask is not where the subject is in latent space"


def test_masked_loss_ignores_the_background():
    s = DDPMScheduler()
    t = torch.tensor([10, 500])
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, :32] = 1  # top half
    latents = torch.zeros(2, 4, 8, 8)
    target = torch.randn(2, 4, 8, 8)
    pred = target.clone()
    pred[:, :, 4:] += 1.0  # wrong only in the bottom half (the background)
    ignore = per_sample_loss(pred, target, t, s, LossConfig(), mask_weights(mask, latents, 0.0))
    half = per_sample_loss(pred, target, t, s, LossConfig(), mask_weights(mask, latents, 0.5))
    plain = per_sample_loss(pred, target, t, s, LossConfig())
    assert torch.equal(ignore, torch.zeros(2))
    assert torch.allclose(half, torch.full((2,), 1 / 3)) and torch.allclose(plain, torch.full((2,), 0.5))
    ones = per_sample_loss(pred, target, t, s, LossConfig(), mask_weights(torch.ones(2, 1, 64, 64), latents, 0.0))
    assert torch.allclose(ones, plain)


def test_masked_loss_trains(fast_config, masked_folder):
    summary = run(fast_config(*overrides(*masked_folder, "loss.unmasked_weight=0.1")))
    assert summary["steps"] == 3 and summary["instance_images"] == 3
    assert all(v == v for v in summary["final_metrics"].values())
