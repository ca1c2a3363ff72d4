"""What the callbacks that build a pipeline around the trained module need besides it (grids, full saves)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class PipelineParts:
    """The base pipeline's tokenizer(s) and sampling scheduler, and the text encoder's clip_skip (model.clip_skip)."""

    tokenizer: Any
    scheduler: Any
    tokenizer_2: Any = None  # SDXL's second tokenizer: grids and full saves use the SDXL pipeline
    clip_skip: int = 1
