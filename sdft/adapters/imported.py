"""What importing a LoRA file into a model reports, and which adapter kind a file holds: shared by the SD 1.x
import (sdft/adapters/load.py) and the SDXL import (sdft/adapters/sdxl_load.py), which would otherwise import
each other."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from peft.tuners.lora import LoraLayer
from torch import nn

from sdft.adapters.lora import ADAPTER_NAME

log = logging.getLogger(__name__)


@dataclass
class ImportedLora:
    """What was injected, per model: module count, ranks and alphas found in the file."""

    modules: dict[str, int] = field(default_factory=dict)  # "unet"/"text_encoder" -> number of LoRA modules
    ranks: dict[str, list[int]] = field(default_factory=dict)  # distinct ranks per model
    alphas: dict[str, list[float]] = field(default_factory=dict)  # distinct alphas per model

    def record(self, part: str, layers: list[LoraLayer], path) -> None:
        """Note (and log) the LoRA layers `layers` injected into `part` from the file `path`."""
        self.modules[part] = len(layers)
        self.ranks[part] = sorted({m.r[ADAPTER_NAME] for m in layers})
        self.alphas[part] = sorted({float(m.lora_alpha[ADAPTER_NAME]) for m in layers})
        log.info(
            "Imported %d LoRA modules into the %s from %s (ranks %s, alphas %s)",
            len(layers),
            part,
            path,
            self.ranks[part],
            self.alphas[part],
        )


def lora_layers(model: nn.Module) -> list[LoraLayer]:
    """The model's LoRA layers holding the trained adapter."""
    return [m for m in model.modules() if isinstance(m, LoraLayer) and ADAPTER_NAME in m.r]


def file_kind_of(path: str | os.PathLike) -> str | None:
    """The adapter kind of a safetensors file from its key names (sdft/adapters/lycoris.py: loha, lokr, dora, oft, full), None for LoRA / LoCon."""
    from sdft.adapters.lora_file import lora_header
    from sdft.adapters.lycoris import file_kind

    return file_kind(lora_header(path)[0])
