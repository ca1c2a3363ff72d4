"""Does a LoRA file fit a pipeline's base model: the modules of each part it adapts, checked before anything loads.

The one place outside sdft/families/ where loading asks which LoRA file layout the base takes (`uses_sdxl_files`):
SDXL's files are checked with diffusers' own SDXL key conversion (sdft/adapters/sdxl_check.py), SD 1.x / SD 2.x
files with the kohya / diffusers rules they share (sdft/adapters/kohya.py). `sdft generate`, the UI and `sdft export`
all check here, so a file is refused with the same message everywhere.
"""

from __future__ import annotations

from typing import Mapping

import torch

from sdft.adapters.kohya import check_lora_fits
from sdft.adapters.sdxl_check import check_sdxl_lora_fits
from sdft.adapters.sdxl_files import uses_sdxl_files


def lora_fit(state: Mapping[str, torch.Tensor], pipe, metadata: Mapping[str, str] | None, source: str) -> dict:
    """{part: the module names the plain LoRA state dict adapts} for the pipeline's U-Net and text tower(s); raises
    LoraFormatError naming the tensors that fit no layer of this base."""
    if uses_sdxl_files(pipe):  # a family test (docs/families.md): U-Net and both towers, diffusers' SDXL conversion
        return check_sdxl_lora_fits(state, pipe, source)
    unet_sd, te_sd, _ = check_lora_fits(state, pipe.unet, pipe.text_encoder, metadata, source=source)
    return {
        part: {k.removesuffix(".lora_A.weight") for k in sd if k.endswith(".lora_A.weight")}
        for part, sd in (("unet", unet_sd), ("text_encoder", te_sd))
    }
