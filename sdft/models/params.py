"""Parameter counts of a model, and the text towers a pipeline or module holds."""

from __future__ import annotations

from torch import nn


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def text_towers(obj) -> list[nn.Module]:
    """The text encoders `obj` (a pipeline, a training module, plan's models) holds: one, or SDXL's two."""
    return [m for m in (getattr(obj, "text_encoder", None), getattr(obj, "text_encoder_2", None)) if m is not None]
