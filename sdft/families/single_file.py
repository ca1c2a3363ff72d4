"""A pipeline as one original-layout (A1111 / civitai / ComfyUI) `.safetensors` file: the U-Net and VAE as every
family names them (sdft/models/original_layout.py), the text tower(s) as the pipeline's family does
(`Family.original_text_parts`: SD 1.x `cond_stage_model.transformer.`, SD 2.x OpenCLIP `cond_stage_model.model.`,
SDXL `conditioner.embedders.0/1.`). Load it back with the family's pipeline class's `from_single_file`."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from safetensors.torch import save_file

from sdft.atomic import atomic_path
from sdft.families import family_of
from sdft.families.base import Part
from sdft.models.original_layout import UNET_PREFIX, VAE_PREFIX, merged_state_dict, unet_to_original, vae_to_original


def pipeline_parts(pipe: DiffusionPipeline) -> list[Part]:
    """Each model of `pipe` with its original prefix and key conversion (the text towers: its family's)."""
    parts: list[Part] = [
        (UNET_PREFIX, lambda sd: unet_to_original(sd, pipe.unet.config), pipe.unet),
        (VAE_PREFIX, lambda sd: vae_to_original(sd, pipe.vae.config), pipe.vae),
    ]
    return [*parts, *family_of(pipe).original_text_parts(pipe)]


def pipeline_to_original(pipe: DiffusionPipeline, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """All weights of `pipe` under their original single-file names (LoRA merged), optionally cast to `dtype`."""
    out: dict[str, torch.Tensor] = {}
    for prefix, convert, model in pipeline_parts(pipe):
        for key, value in convert(merged_state_dict(model)).items():
            value = value.detach().to("cpu", dtype=dtype if dtype is not None and value.is_floating_point() else None)
            out[prefix + key] = value.contiguous()
    return out


def save_single_file(
    pipe: DiffusionPipeline, path: str | os.PathLike, dtype: torch.dtype | None = torch.float16
) -> Path:
    """Write `pipe` as one original-layout `.safetensors` checkpoint, atomically (temp name + rename)."""
    path = Path(path)
    tensors = pipeline_to_original(pipe, dtype)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return path
