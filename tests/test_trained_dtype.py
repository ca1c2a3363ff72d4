"""Trained parameters are fp32 whatever the frozen weights' dtype (diffusers' cast_training_params, issue 19)."""

from __future__ import annotations

import torch

from sdft.adapters.lora import setup_trainable, start_phase
from sdft.config import AdapterConfig


def dtypes(model) -> tuple[set, set]:
    trained = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    return trained, frozen


def test_adapters_train_in_fp32_on_fp16_weights(tiny_pipe_factory):
    pipe = tiny_pipe_factory()
    unet, te = pipe.unet.half(), pipe.text_encoder.half()
    cfg = AdapterConfig()
    setup_trainable(unet, te, cfg)
    for model in (unet, te):
        assert dtypes(model) == ({torch.float32}, {torch.float16})
    start_phase(unet, te, cfg, "stack", "first")  # the first adapter frozen under its name, a new one on top
    for model in (unet, te):
        trained, frozen = dtypes(model)
        assert trained == {torch.float32} and torch.float16 in frozen
        assert any(".first." in n for n, _ in model.named_parameters())  # the frozen one is still there
