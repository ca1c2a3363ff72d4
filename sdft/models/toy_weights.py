"""Where the shipped toy base model lives (a diffusers folder of fp16 safetensors, package data)."""

from __future__ import annotations

from pathlib import Path

import torch

from sdft.errors import ModelLoadError

TOY_MODEL_DIR = Path(__file__).resolve().parents[1] / "toy" / "model"  # package data of sdft.toy


def toy_model_dir() -> Path:
    """The toy model's folder; a clear error if the package was installed without its data."""
    if not (TOY_MODEL_DIR / "model_index.json").is_file():
        raise ModelLoadError(
            f"The toy base model is missing from {TOY_MODEL_DIR} (no model_index.json). Reinstall sdft with its "
            "package data, or rebuild it as sdft/toy/MODEL_CARD.md describes; model=tiny needs no files."
        )
    return TOY_MODEL_DIR


def load_toy_pipeline(folder: Path | None = None, dtype: torch.dtype = torch.float32):
    """The toy pipeline with every model in `dtype` (the files are fp16; diffusers would otherwise mix dtypes)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(
        folder or toy_model_dir(),
        dtype=dtype,
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
    )
