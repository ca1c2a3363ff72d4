"""Caches on by default where exact (issue #21): a default run uses them and trains with the same losses as without."""

from __future__ import annotations

import logging

import lightning as L
import torch

from helpers.images import noise_image
from sdft.data.cache_policy import encodes_in_run
from helpers.wiring import prepare_for_test


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def two_images(tmp_path) -> list[str]:
    for k in range(2):
        noise_image(tmp_path / "inst" / f"{k}.png", size=(64, 64), seed=k)
    return [
        f"data.instance_dir={tmp_path / 'inst'}",
        "data.instance_prompt=photo of sks thing",
        "data.class_prompt=photo of a thing",
    ]


def fitted(fast_config, *overrides):
    parts = prepare_for_test(fast_config(*overrides))
    recorder = LossRecorder()
    parts.trainer.callbacks.append(recorder)
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    return parts, torch.tensor(recorder.losses)


def test_default_run_caches_and_keeps_the_losses(fast_config, tmp_path):
    args = [
        *two_images(tmp_path),
        "adapter.train_text_encoder=false",
        "prior=default",
        "trainer.max_steps=4",
        "callbacks.fixed_noise_loss=false",
    ]
    auto, cached = fitted(fast_config, *args)
    off, plain = fitted(fast_config, *args, "data.cache_latents=false", "data.cache_text_encoder_outputs=false")
    assert auto.datamodule.latents is not None and auto.datamodule.texts is not None
    assert off.datamodule.latents is None and off.datamodule.texts is None
    assert len(cached) == len(plain) == 4
    torch.testing.assert_close(cached, plain, rtol=1e-4, atol=1e-6)


def test_auto_skips_quietly_where_not_exact(fast_config, tmp_path, caplog):
    parts = prepare_for_test(fast_config(*two_images(tmp_path), "data.center_crop=false"))  # random crops; TE trained
    with caplog.at_level(logging.INFO):
        parts.datamodule.build_caches(parts.module)
    assert parts.datamodule.latents is None and parts.datamodule.texts is None
    assert "random crops" in caplog.text and "text encoder" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "cache" in r.getMessage()]


def test_asked_for_cache_warns_when_impossible(fast_config, tmp_path, caplog):
    parts = prepare_for_test(fast_config(*two_images(tmp_path), "data.center_crop=false", "data.cache_latents=true"))
    with caplog.at_level(logging.WARNING):
        parts.datamodule.build_caches(parts.module)
    assert parts.datamodule.latents is None and "random crops" in caplog.text


def test_auto_skips_a_cache_bigger_than_the_run(fast_config, tmp_path):
    args = two_images(tmp_path)
    short = prepare_for_test(fast_config(*args))
    short.datamodule.build_caches(short.module, encodes=1)  # 2 images to encode for a run that encodes 1
    assert short.datamodule.latents is None
    asked = prepare_for_test(fast_config(*args, "data.cache_latents=true"))
    asked.datamodule.build_caches(asked.module, encodes=1)
    assert asked.datamodule.latents is not None


def test_encodes_in_run():
    assert encodes_in_run(400, 2, True) == 1600 and encodes_in_run(10, 1, False) == 10
    assert encodes_in_run(-1, 1, False) is None


def test_fixed_noise_loss_encodes_once_and_keeps_its_value(fast_config, tmp_path):
    """val/fixed_noise_loss encodes images and prompts once per measurement, not once per timestep; same value."""
    from types import SimpleNamespace

    from sdft.callbacks.fixed_noise_loss import FixedNoiseLoss
    from sdft.training.fixed_noise import TIMESTEPS

    parts = prepare_for_test(fast_config(*two_images(tmp_path)))
    module, trainer = parts.module, SimpleNamespace(datamodule=parts.datamodule)
    fixed = FixedNoiseLoss(0, 64, seed=5)
    calls = {"vae": 0}
    encode = module.encode_latents

    def counted(*args, **kwargs):
        calls["vae"] += 1
        return encode(*args, **kwargs)

    module.encode_latents = counted
    value = fixed.measure(trainer, module)
    assert calls["vae"] == 1
    batch, gen, losses = fixed.meter._batch, torch.Generator("cpu").manual_seed(5), []
    with torch.no_grad():  # the per-timestep computation it replaces
        for t in TIMESTEPS:
            latents = encode(batch["pixel_values"], sample=False)
            noise = torch.randn(latents.shape, generator=gen)
            steps = torch.full((latents.shape[0],), t, dtype=torch.long)
            losses.append(module.loss_at(latents, noise, steps, batch["input_ids"]).mean())
    assert value == float(torch.stack(losses).mean())
    # later measurements (every N steps, the end) reuse the frozen VAE's means: no encoder run, same value
    assert fixed.measure(trainer, module) == value and calls["vae"] == 1
