"""SDXL LoRA files: the diffusers/peft file and the kohya/A1111/ComfyUI file, for U-Net + both text towers.

diffusers file: the raw peft state dicts with their adapter configs as metadata (as sdft/adapters/formats.py does
for SD 1.x), written by `StableDiffusionXLPipeline.save_lora_weights`; keys `unet.`, `text_encoder.text_model.`,
`text_encoder_2.text_model.`. kohya file: `lora_unet_<original-layout module path>`, `lora_te1_text_model_...` and
`lora_te2_text_model_...` with `.lora_down.weight` / `.lora_up.weight` / `.alpha` (or another kind's keys),
`ss_base_model_version` = `sdxl_base_v1-0`. The U-Net keys name SDXL's original (sgm) layout as kohya's sd-scripts
do for SDXL (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`, `lora_unet_output_blocks_2_2_conv`),
mapped by sdft/models/original_layout.py (the single-file export's names): A1111 looks these up directly (its
diffusers-name rules are SD 1.x's and send up_blocks.0's upsampler to a layer SDXL does not have), ComfyUI and
diffusers map them too. Files sdft wrote before with diffusers-style U-Net names (`lora_unet_down_blocks_...`) are
still read (peft_files.py; diffusers' loader for LoRA / LoCon).
transformers 5's CLIPTextModel has no `text_model.` level while CLIPTextModelWithProjection keeps it: both are
written with it, as every client expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from diffusers import StableDiffusionXLPipeline
from torch import nn

from sdft.adapters.formats import adapter_state, with_text_model, write_lora_file
from sdft.adapters.kohya import LoraFormatError, write_kohya_file
from sdft.adapters.lora import ADAPTER_NAME, has_lora
from sdft.adapters.lycoris import NoKohyaFormat, layer_tensors
from sdft.families import family_of
from sdft.families.sdxl import KOHYA_PREFIXES, diffusers_style_name, kohya_name, kohya_names  # noqa: F401

SDXL_BASE_VERSION = "sdxl_base_v1-0"


def uses_sdxl_files(obj) -> bool:
    """Whether `obj` (a pipeline or training module) takes SDXL's LoRA files (two text towers: lora_te1_ / lora_te2_,
    text_encoder_2.) rather than the SD 1 layout SD 1.x and SD 2.x share: what generation, saving and export ask."""
    return "text_encoder_2" in family_of(obj).text_parts


def save_sdxl_lora(unet: nn.Module, text_encoder: nn.Module, text_encoder_2: nn.Module, path) -> Path:
    """Write the diffusers-format SDXL LoRA file (whichever models hold an adapter), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    (unet_sd, unet_meta), (te_sd, te_meta), (te2_sd, te2_meta) = (
        adapter_state(m) for m in (unet, text_encoder, text_encoder_2)
    )
    if not (unet_sd or te_sd or te2_sd):
        raise LoraFormatError("save_sdxl_lora: neither the U-Net nor a text encoder has a LoRA adapter.")
    return write_lora_file(
        StableDiffusionXLPipeline,
        path,
        unet_lora_layers=unet_sd,
        text_encoder_lora_layers=with_text_model(te_sd),
        text_encoder_2_lora_layers=with_text_model(te2_sd),
        unet_lora_adapter_metadata=unet_meta,
        text_encoder_lora_adapter_metadata=te_meta,
        text_encoder_2_lora_adapter_metadata=te2_meta,
    )


def sdxl_kohya_tensors(
    models: Mapping[str, nn.Module | None], dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """{"unet"|"text_encoder"|"text_encoder_2": model} adapters as kohya tensors (LoRA, LoCon, DoRA, LoHa, LoKr)."""
    tensors: dict[str, torch.Tensor] = {}
    for part, model in models.items():
        if model is None or not has_lora(model):
            continue
        if getattr(model.peft_config[ADAPTER_NAME], "use_rslora", False):
            raise LoraFormatError(f"{part}: rsLoRA has no kohya equivalent; use the diffusers-format file.")
        try:
            layers = layer_tensors(model)
        except NoKohyaFormat as e:
            raise LoraFormatError(f"{part}: {e}.") from None
        names = kohya_names(part, layers, getattr(model, "config", None) if part == "unet" else None)
        for module, values in layers.items():
            for suffix, value in values.items():
                tensors[f"{names[module]}.{suffix}"] = value.to(dtype).contiguous()
    return tensors


def save_sdxl_kohya_lora(
    unet: nn.Module,
    text_encoder: nn.Module,
    text_encoder_2: nn.Module,
    path,
    metadata: Mapping[str, str],
    fp16: bool = False,
) -> Path:
    """Write the kohya-format SDXL LoRA file (ss_* metadata, sshs_* hashes), atomically."""
    models = {"unet": unet, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2}
    tensors = sdxl_kohya_tensors(models, torch.float16 if fp16 else torch.float32)
    if not tensors:
        raise LoraFormatError("save_sdxl_kohya_lora: neither the U-Net nor a text encoder has a LoRA adapter.")
    return write_kohya_file(tensors, path, {**metadata, "ss_base_model_version": SDXL_BASE_VERSION})


def save_sdxl_weights(
    module, target: Path, name: str, kind, metadata: Mapping[str, str], fp16: bool, tokenizer, tokenizer_2, scheduler
) -> Path:
    """What LoraCheckpoint saves for an SDXL module: both LoRA files (the kohya one where the kind has one), or
    the whole SDXL pipeline for a full fine-tune. Returns the diffusers file / the pipeline folder."""
    from sdft.adapters.formats import LORA_WEIGHT_NAME, save_pipeline
    from sdft.adapters.kinds import has_kohya_format, is_peft_kind
    from sdft.families import module_pipeline

    models = (module.unet, module.text_encoder, module.text_encoder_2)
    if not is_peft_kind(kind):
        return save_pipeline(module_pipeline(module, tokenizer, tokenizer_2, scheduler), target)
    if has_kohya_format(kind):
        save_sdxl_kohya_lora(*models, target / f"{name}.safetensors", metadata, fp16)
    return save_sdxl_lora(*models, target / LORA_WEIGHT_NAME)
