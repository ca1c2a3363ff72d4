"""Read a LoRA .safetensors file that may come from anywhere: a damaged or foreign file is one LoraFormatError naming
it (never a raw SafetensorError / JSONDecodeError traceback), and weights that are not finite are refused up front
(a NaN LoRA would otherwise render black images with exit 0).

Every command that reads a LoRA / LyCORIS / OFT file (train's init_lora, generate, export, lora resize, the
adapter imports, `lora extract`) reads it through these functions, so each refuses a damaged file the same way;
embedding files open through `open_safetensors` too, with their own error class."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from sdft.errors import LoraFormatError, SdftError


JSON_METADATA = (
    "lora_adapter_metadata",
    "sdft_config",
)  # metadata entries readers parse as JSON (peft, sdft/training/noise.py)
LORA_FIX = "Use the LoRA file a training run wrote (lora/*.safetensors)."


@contextmanager
def open_safetensors(
    path: str | os.PathLike, what: str = "LoRA", fix: str = LORA_FIX, error: type[SdftError] = LoraFormatError
) -> Iterator:
    """`safe_open(path)` for a file given by the user; a damaged one (empty, truncated, a bad header, a declared
    shape its data does not hold, another format) is one `error` naming it: "<what> <path>: not a readable
    .safetensors file (...). <fix>". Every reader of a user-given .safetensors file (LoRA, adapter, embedding, the
    `--tuned` of `lora extract`) opens it here."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            yield f
    except (SafetensorError, OSError, ValueError) as err:
        raise error(
            f"{what} {path}: not a readable .safetensors file (empty, truncated, a damaged header or another format: "
            f"{str(err)[:160]}). {fix}"
        ) from None


def lora_header(path: str | os.PathLike) -> tuple[list[str], dict[str, str]]:
    """(tensor names, metadata) from the file's header only, without reading the weights; checked as readable."""
    with open_safetensors(path) as f:
        return list(f.keys()), dict(f.metadata() or {})


def read_lora_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors LoRA file, checked: readable, metadata JSON valid, values finite."""
    with open_safetensors(path) as f:
        metadata = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    for key in JSON_METADATA:
        try:
            json.loads(metadata.get(key, "{}"))
        except json.JSONDecodeError as err:
            raise LoraFormatError(
                f"LoRA {path}: its {key} is not valid JSON ({err}); the file was "
                "edited or damaged. Re-export it, or drop that metadata entry."
            ) from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise LoraFormatError(
            f"LoRA {path}: {len(bad)} tensor(s) hold NaN/inf values (e.g. {bad[0]}): training "
            "diverged. Use an earlier checkpoint (checkpoints/step_*/) or retrain with a lower lr."
        )
    return state, metadata
