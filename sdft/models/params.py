"""Parameter counts of a model, and the text towers a pipeline or module holds."""

from __future__ import annotations

from torch import nn


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


TEXT_PARTS = ("text_encoder", "text_encoder_2")  # the attribute names a pipeline gives its text towers, in order


def named_text_towers(obj) -> list[tuple[str, nn.Module]]:
    """(part name, text encoder) for each text tower `obj` (a pipeline, a training module, plan's models) holds, in
    order: callers loop over the towers instead of asking which family has how many."""
    return [(name, m) for name in TEXT_PARTS if (m := getattr(obj, name, None)) is not None]


def text_towers(obj) -> list[nn.Module]:
    """The text encoders `obj` holds: one, or SDXL's two."""
    return [m for _, m in named_text_towers(obj)]
