"""Helpers of the `sdft ui` tests: a small random LoRA file for the tiny model, and a UI session on one Generator."""

from __future__ import annotations

from pathlib import Path

import torch

from sdft.adapters.formats import save_lora
from sdft.adapters.lora import setup_trainable
from sdft.config import AdapterConfig


def make_lora(pipe, path: Path, seed: int = 0) -> Path:
    """A rank-2 LoRA on U-Net cross-attention with random (visible) weights, in our diffusers format."""
    setup_trainable(pipe.unet, pipe.text_encoder,
                    AdapterConfig(rank=2, train_text_encoder=False, unet_targets=["attn2"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in pipe.unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)
    return save_lora(pipe.unet, pipe.text_encoder, path)
