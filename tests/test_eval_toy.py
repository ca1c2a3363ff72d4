"""On a pretrained base (the toy model), prior preservation lowers language drift at an equal number of steps.

Measured on two versions of the toy weights: drift with prior = 0.44-0.78 of drift without, over five seeds."""

from __future__ import annotations

import pytest
from diffusers import DDPMScheduler

from helpers.config import compose_config
from sdft.config import ModelConfig
from sdft.evaluation import metrics
from sdft.families.load import load_pipeline
from sdft.run.train import fit
from helpers.wiring import prepare_for_test


CLASS_PROMPTS = ["a dog", "a big dog in the middle on a white background", "a small dog on the left", "a red dog"]
STEPS = 30


def predictions(pipe, scheduler):
    pipe.unet.eval()
    pipe.text_encoder.eval()
    return metrics.eps_predictions(pipe, scheduler, CLASS_PROMPTS, 32)


def drift_after(tmp_path, reference, scheduler, prior: bool, seed: int) -> float:
    cfg = compose_config(
        [
            "model=toy",
            "data=toy_subject",
            "adapter=lora_attn",
            "prior=default",
            f"prior.enabled={str(prior).lower()}",
            "prior.num_class_images=8",
            "prior.generation_steps=20",
            "trainer=cpu",
            f"trainer.max_steps={STEPS}",
            "optim.lr=2e-3",
            f"output_dir={tmp_path / str(prior)}",
            f"data.class_dir={tmp_path / 'class'}",
            "logger=none",
            "trainer.enable_progress_bar=false",
            "callbacks.validation_seeds=[]",
            "callbacks.fixed_noise_loss=false",
            "callbacks.checkpoint_every_n_steps=0",
            f"seed={seed}",
        ]
    )
    parts = prepare_for_test(cfg)
    fit(parts)
    assert parts.trainer.global_step == STEPS
    return metrics.language_drift(predictions(parts.pipe, scheduler), reference)


@pytest.mark.slow  # ~16-20 s: four 30-step runs
def test_prior_preservation_lowers_drift_on_a_pretrained_base(tmp_path):
    base = load_pipeline(ModelConfig(path="toy"))
    scheduler = DDPMScheduler.from_config(base.scheduler.config)
    reference = predictions(base, scheduler)
    for seed in (1, 2):  # same seed, same steps with and without; two seeds so one lucky run cannot decide
        without = drift_after(tmp_path, reference, scheduler, prior=False, seed=seed)
        with_prior = drift_after(tmp_path, reference, scheduler, prior=True, seed=seed)
        assert 0 < with_prior < 0.9 * without, (seed, with_prior, without)
