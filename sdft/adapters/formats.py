"""Writing trained weights: LoRA files diffusers loads exactly, and full pipelines.

The LoRA file is the raw peft state dict plus the peft adapter config as safetensors metadata: diffusers'
`load_lora_weights` rebuilds exactly the trained layers from it, also when alpha != rank (diffusers'
convert_state_dict_to_diffusers path silently drops layers when feed-forward targets are included). Text-encoder
keys get the conventional `text_model.` level that transformers 5 dropped (`text_encoder.text_model.encoder...`).
No `.alpha` tensors: diffusers 0.42 refuses a peft-format file holding them; alpha lives in the metadata.
"""

from __future__ import annotations

import os
from pathlib import Path

from diffusers import StableDiffusionPipeline
from peft.utils import get_peft_model_state_dict
from torch import nn

from sdft.adapters.lora import ADAPTER_NAME, has_lora
from sdft.atomic import atomic_dir, atomic_path
from sdft.errors import ConfigError

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def adapter_state(model: nn.Module) -> tuple[dict | None, dict | None]:
    if not has_lora(model):
        return None, None
    state = {
        k: v.detach().float().cpu().contiguous()
        for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME).items()
    }
    meta = model.peft_config[ADAPTER_NAME].to_dict()
    if isinstance(meta.get("target_modules"), (set, frozenset)):  # same file bytes in every process (set order varies)
        meta["target_modules"] = sorted(meta["target_modules"])
    return state, meta


def save_lora(unet: nn.Module, text_encoder: nn.Module, path: str | os.PathLike) -> Path:
    """Write the LoRA of `unet` and `text_encoder` (whichever has one) to `path`, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    unet_sd, unet_meta = adapter_state(unet)
    te_sd, te_meta = adapter_state(text_encoder)
    te_sd = with_text_model(te_sd)
    if unet_sd is None and te_sd is None:
        raise ConfigError("save_lora: neither the U-Net nor the text encoder has a LoRA adapter.")
    return write_lora_file(
        StableDiffusionPipeline,
        path,
        unet_lora_layers=unet_sd,
        text_encoder_lora_layers=te_sd,
        unet_lora_adapter_metadata=unet_meta,
        text_encoder_lora_adapter_metadata=te_meta,
    )


def with_text_model(te_sd: dict | None) -> dict | None:
    """Conventional CLIP names (`text_model.encoder...`): what ComfyUI, A1111, older diffusers read; 0.42 too."""
    return {"text_model." + k.removeprefix("text_model."): v for k, v in te_sd.items()} if te_sd else te_sd


def write_lora_file(pipeline_cls, path: Path, **layers) -> Path:
    """`pipeline_cls.save_lora_weights(**layers)` written to `path` atomically (sdft/atomic.py: a temp folder, then a
    rename, the umask's permissions)."""
    with atomic_path(path) as tmp:
        pipeline_cls.save_lora_weights(tmp.parent, weight_name=tmp.name, safe_serialization=True, **layers)
    return path


def save_pipeline(pipe: StableDiffusionPipeline, directory: str | os.PathLike) -> Path:
    """Write a whole pipeline as a diffusers folder (safetensors), replacing `directory` only once complete."""
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    return directory
