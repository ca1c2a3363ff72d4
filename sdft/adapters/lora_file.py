"""Read a LoRA .safetensors file that may come from anywhere: a damaged or foreign file is one LoraFormatError naming
it (never a raw SafetensorError / JSONDecodeError traceback), and weights that are not finite are refused up front
(a NaN LoRA would otherwise render black images with exit 0).

Every command that reads a LoRA / LyCORIS / OFT file (train's init_lora, generate, export, lora resize, the
adapter imports) reads it through these two functions, so each refuses a damaged file the same way."""

from __future__ import annotations

import json
import os

import torch

from sdft.errors import LoraFormatError


def _unreadable(path, err: Exception) -> LoraFormatError:
    return LoraFormatError(
        f"LoRA {path}: not a readable .safetensors file (empty, truncated, a damaged header or another format: "
        f"{str(err)[:160]}). Use the LoRA file a training run wrote (lora/*.safetensors)."
    )


def lora_header(path: str | os.PathLike) -> tuple[list[str], dict[str, str]]:
    """(tensor names, metadata) from the file's header only, without reading the weights; checked as readable."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys()), dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise _unreadable(path, err) from None


def read_lora_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors LoRA file, checked: readable, metadata JSON valid, values finite."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise _unreadable(path, err) from None
    if "lora_adapter_metadata" in metadata:
        try:
            json.loads(metadata["lora_adapter_metadata"])
        except json.JSONDecodeError as err:
            raise LoraFormatError(
                f"LoRA {path}: its lora_adapter_metadata is not valid JSON ({err}); the file was "
                "edited or damaged. Re-export it, or drop that metadata entry."
            ) from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise LoraFormatError(
            f"LoRA {path}: {len(bad)} tensor(s) hold NaN/inf values (e.g. {bad[0]}): training "
            "diverged. Use an earlier checkpoint (checkpoints/step_*/) or retrain with a lower lr."
        )
    return state, metadata
