"""Checking that an SDXL LoRA file fits an SDXL base: `check_sdxl_lora_fits` maps the file (diffusers or kohya format)
onto the pipeline's U-Net and both text towers with diffusers' own key conversion, so a file that would load partly (or
an SD 1.x file) is one LoraFormatError before `load_lora_weights` (generation, init_lora, export)."""

from __future__ import annotations

from typing import Mapping

import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft, convert_unet_state_dict_to_peft

from sdft.adapters.kohya import PEFT_KEY, LoraFormatError, lora_modules

# the diffusers-format prefixes of each part (text towers with the conventional `text_model.` level)
PARTS = {"unet": "unet.", "text_encoder": "text_encoder.", "text_encoder_2": "text_encoder_2."}


def sdxl_peft_state(state: Mapping[str, torch.Tensor], unet_config=None) -> dict[str, dict[str, torch.Tensor]]:
    """An SDXL LoRA file's tensors (diffusers or kohya keys) -> {part: peft state dict}, converted the way
    `StableDiffusionXLPipeline.load_lora_weights` converts them (text towers' keys keep `text_model.`). With the
    U-Net's config, kohya's own original-layout names (`lora_unet_input_blocks_4_1_...`) are mapped too, as there."""
    if any(k.startswith("lora_te_") for k in state):
        raise LoraFormatError(
            "this is an SD 1.x LoRA (lora_te_ keys, one text encoder), not an SDXL one; use it with an SD 1.x base."
        )
    converted, _ = StableDiffusionXLPipeline.lora_state_dict(
        {k: v.clone() for k, v in state.items()}, unet_config=unet_config
    )
    out = {}
    for part, prefix in PARTS.items():
        sd = {k.removeprefix(prefix): v for k, v in converted.items() if k.startswith(prefix)}
        if not sd:
            continue
        if part == "unet":
            out[part] = convert_unet_state_dict_to_peft(sd)
        else:
            out[part] = convert_state_dict_to_peft(convert_state_dict_to_diffusers(sd))
    return out


def check_sdxl_lora_fits(state: Mapping[str, torch.Tensor], pipe, source: str = "LoRA") -> dict[str, set[str]]:
    """{part: module names} an SDXL LoRA file adapts; every tensor must land on a layer of its shape."""
    errors, modules = [], {}
    for part, sd in sdxl_peft_state(state, getattr(pipe.unet, "config", None)).items():
        model = getattr(pipe, part, None)
        layers = lora_modules(model)
        if not hasattr(model, "text_model"):  # transformers 5 CLIPTextModel: no `text_model.` level
            layers = {**layers, **{"text_model." + k: v for k, v in layers.items()}}
        for key, value in sd.items():
            match = PEFT_KEY.fullmatch(key)
            layer = layers.get(match["module"]) if match else None
            if layer is None:
                errors.append(f"{part}.{key}: no such layer")
                continue
            width = layer.in_channels if isinstance(layer, torch.nn.Conv2d) else getattr(layer, "in_features", None)
            out = layer.out_channels if isinstance(layer, torch.nn.Conv2d) else getattr(layer, "out_features", None)
            fits = value.shape[1] == width if match["part"] == "A" else value.shape[0] == out
            if not fits:
                errors.append(f"{part}.{key}: shape {tuple(value.shape)} does not fit the layer ({width} -> {out})")
            modules.setdefault(part, set()).add(
                match["module"].removeprefix("text_model.") if part == "text_encoder" else match["module"]
            )
    if errors:
        listing = "\n  ".join(errors[:10]) + (f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else "")
        raise LoraFormatError(f"{source} does not fit this SDXL model: {len(errors)} problem(s):\n  {listing}")
    return modules
