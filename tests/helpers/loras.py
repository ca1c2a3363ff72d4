"""Random LoRAs for tests: peft initialises lora_B to zero (an untrained LoRA changes nothing, proving nothing), so
tests give the LoRA weights seeded random values; and a small LoRA file for the tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from sdft.adapters.formats import save_lora
from sdft.adapters.lora import setup_trainable
from sdft.config import AdapterConfig


def randomise_lora(models: Iterable[nn.Module], seed: int, scale: float) -> None:
    """Every `lora_*` parameter of `models` (in order, one generator) set to seeded randn * scale."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for model in models:
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * scale)


def make_lora(pipe, path: Path, seed: int = 0) -> Path:
    """A rank-2 LoRA on U-Net cross-attention with random (visible) weights, in our diffusers format."""
    setup_trainable(
        pipe.unet, pipe.text_encoder, AdapterConfig(rank=2, train_text_encoder=False, unet_targets=["attn2"])
    )
    randomise_lora([pipe.unet], seed, 0.3)
    return save_lora(pipe.unet, pipe.text_encoder, path)
