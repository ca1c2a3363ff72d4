"""A NaN loss ends the run with one clear SdftError, also when the check is sparse, and the message does not call
exploded weights intact (issue 20, items 8 and 9)."""

from __future__ import annotations

import pytest
import torch

from sdft.errors import NonFiniteLossError, SdftError
from sdft.training.module import DreamBoothModule
from sdft.run.train import run


def nan_from_step(monkeypatch, step: int, explode: bool = False):
    """From `step` on the loss is NaN; with `explode`, a trained weight is first set to 1e30 (finite, useless)."""
    original = DreamBoothModule.diffusion_loss

    def diffusion_loss(self, batch):
        per_sample, timesteps = original(self, batch)
        if self.global_step >= step:
            if explode:
                with torch.no_grad():
                    next(p for p in self.parameters() if p.requires_grad).fill_(1e30)
            per_sample = per_sample * float("nan")
        return per_sample, timesteps

    monkeypatch.setattr(DreamBoothModule, "diffusion_loss", diffusion_loss)


def test_nan_with_a_sparse_check_is_a_clear_error(fast_config, monkeypatch):
    nan_from_step(monkeypatch, 1)
    with pytest.raises(SdftError, match="not finite"):
        run(
            fast_config(
                "loss.finite_check_every_n_steps=100", "trainer.max_steps=3", "callbacks.fixed_noise_loss=false"
            )
        )


def test_nan_message_does_not_call_exploded_weights_intact(fast_config, monkeypatch):
    nan_from_step(monkeypatch, 1, explode=True)
    with pytest.raises(NonFiniteLossError) as err:
        run(fast_config("trainer.max_steps=3", "callbacks.fixed_noise_loss=false"))
    message = str(err.value)
    assert "intact" not in message and "1e+30" in message, message
