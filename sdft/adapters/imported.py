"""What importing a LoRA file into a model reports, and which adapter kind a file holds: shared by the SD 1.x
import (sdft/adapters/load.py) and the SDXL import (sdft/adapters/sdxl_load.py), which would otherwise import
each other."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class ImportedLora:
    """What was injected, per model: module count, ranks and alphas found in the file."""

    modules: dict[str, int] = field(default_factory=dict)  # "unet"/"text_encoder" -> number of LoRA modules
    ranks: dict[str, list[int]] = field(default_factory=dict)  # distinct ranks per model
    alphas: dict[str, list[float]] = field(default_factory=dict)  # distinct alphas per model


def file_kind_of(path: str | os.PathLike) -> str | None:
    """The adapter kind of a safetensors file from its key names (sdft/adapters/lycoris.py: loha, lokr, dora, oft, full), None for LoRA / LoCon."""
    from safetensors import safe_open

    from sdft.adapters.lycoris import file_kind

    with safe_open(str(path), framework="pt") as f:
        return file_kind(list(f.keys()))
