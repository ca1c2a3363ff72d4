"""Instance fidelity and language drift on the tiny model: an untrained adapter drifts exactly 0, drift grows with
the learning rate, and fidelity is the run's own fixed-noise loss."""

from __future__ import annotations

import pytest
from diffusers import DDPMScheduler

from sdft.adapters.lora import setup_trainable
from sdft.config import AdapterConfig
from sdft.data.datamodule import instance_examples
from sdft.evaluation import metrics
from sdft.run.train import fit
from helpers.wiring import prepare_for_test

PROMPTS = ["photo of a character", "a character in the snow"]


def predictions(pipe):
    pipe.unet.eval()
    pipe.text_encoder.eval()
    return metrics.eps_predictions(pipe, DDPMScheduler.from_config(pipe.scheduler.config), PROMPTS, 64)


def test_predictions_are_finite_and_shaped(tiny_pipe_factory):
    pred = predictions(tiny_pipe_factory())
    assert pred.shape == (2, len(metrics.TIMESTEPS), 4, 8, 8) and pred.isfinite().all()


def test_untrained_adapter_drifts_exactly_zero(tiny_pipe_factory):
    pipe = tiny_pipe_factory()
    base = predictions(pipe)
    setup_trainable(pipe.unet, pipe.text_encoder, AdapterConfig(unet_targets=["attn1", "attn2", "ff"]))  # B = 0
    assert metrics.language_drift(predictions(pipe), base) == 0.0


def drift_after_training(fast_config, base, lr: str) -> float:
    parts = prepare_for_test(
        fast_config(
            f"optim.lr={lr}",
            f"optim.text_encoder_lr={lr}",
            "logger=none",
            "callbacks.validation_seeds=[]",
            "callbacks.fixed_noise_loss=false",
        )
    )
    fit(parts)
    return metrics.language_drift(predictions(parts.pipe), base)


def test_drift_grows_with_learning_rate(fast_config, tiny_pipe_factory):
    base = predictions(tiny_pipe_factory())
    low = drift_after_training(fast_config, base, "1e-4")
    high = drift_after_training(fast_config, base, "1e-2")
    assert 0.0 < low < high
    assert high > 10 * low  # 100x the step size: far more than noise between two runs


def test_instance_fidelity_is_the_fixed_noise_loss(fast_config, tiny_pipe_factory):
    parts = prepare_for_test(fast_config("optim.lr=1e-2", "logger=none", "callbacks.validation_seeds=[]"))
    summary = fit(parts)
    pipe, cfg = parts.pipe, parts.cfg
    instances = instance_examples(cfg.data)
    value = metrics.instance_fidelity(
        pipe,
        DDPMScheduler.from_config(pipe.scheduler.config),
        instances,
        pipe.tokenizer,
        cfg.data.resolution,
        seed=cfg.seed,
    )
    assert value == pytest.approx(summary["final_metrics"]["val/fixed_noise_loss"], rel=1e-4)
    base = tiny_pipe_factory()
    before = metrics.instance_fidelity(
        base,
        DDPMScheduler.from_config(base.scheduler.config),
        instances,
        base.tokenizer,
        cfg.data.resolution,
        seed=cfg.seed,
    )
    assert before == pytest.approx(summary["final_metrics"]["val/fixed_noise_loss_start"], rel=1e-4)
