"""All the ways to get a base pipeline: the offline tiny model, a local diffusers folder, a hub id."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline

from sdft.config import TINY_MODEL, Attention, ModelConfig, WeightDtype
from sdft.errors import ModelLoadError

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")
DTYPES = {WeightDtype.fp32: torch.float32, WeightDtype.fp16: torch.float16, WeightDtype.bf16: torch.bfloat16}


def _from_folder(folder: Path) -> StableDiffusionPipeline:
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"model.path={folder} is a folder but not a diffusers pipeline (no model_index.json). "
            "Point model.path at the folder that holds model_index.json, unet/, vae/, text_encoder/, tokenizer/."
        )
    return StableDiffusionPipeline.from_pretrained(
        folder, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )


def _from_hub(cfg: ModelConfig) -> StableDiffusionPipeline:
    offline = cfg.local_files_only or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
    try:  # the token, if any, comes from HF_TOKEN or `huggingface-cli login`, never from the config
        return StableDiffusionPipeline.from_pretrained(
            cfg.path,
            revision=cfg.revision,
            variant=cfg.variant,
            local_files_only=offline,
            safety_checker=None,
            requires_safety_checker=False,
        )
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"Could not load model.path={cfg.path!r} from the Hugging Face hub"
            f"{' (offline mode: only the local cache is searched)' if offline else ''}: {err}\n"
            "Alternatives: model=tiny (offline tiny model), model.path=<local diffusers folder>, or go online "
            "(and set HF_TOKEN in the environment for gated repos)."
        ) from err


def load_pipeline(cfg: ModelConfig) -> StableDiffusionPipeline:
    """Load the base pipeline named by `cfg` (nothing trainable is set up here)."""
    if cfg.path == TINY_MODEL:
        from sdft.models.tiny import ensure_tiny_model

        pipe = _from_folder(ensure_tiny_model(cfg.cache_dir))
    else:
        local = Path(cfg.path).expanduser()
        if local.is_dir():
            pipe = _from_folder(local)
        elif local.is_file():
            raise ModelLoadError(
                f"model.path={cfg.path} is a single file. Single-file (.safetensors/.ckpt) checkpoints are not "
                "supported yet; use the model's diffusers folder or hub id."
            )
        elif HUB_ID.match(cfg.path):
            pipe = _from_hub(cfg)
        else:
            raise ModelLoadError(
                f"model.path={cfg.path!r} is neither an existing folder (looked in {Path.cwd()}) nor a hub id "
                "of the form owner/name. Use model=tiny, model=sd15, or model.path=<diffusers folder>."
            )
    if cfg.prediction_type is not None:
        pipe.scheduler.register_to_config(prediction_type=cfg.prediction_type.value)
    return pipe


def prepare_models(pipe: StableDiffusionPipeline, cfg: ModelConfig) -> None:
    """Frozen dtype, attention backend and gradient checkpointing on the pipeline's models."""
    dtype = DTYPES[cfg.weight_dtype]
    for model in (pipe.unet, pipe.vae, pipe.text_encoder):
        if model.dtype != dtype:
            model.to(dtype=dtype)
        model.requires_grad_(False)
        model.eval()
    if cfg.attention == Attention.xformers:
        if not torch.cuda.is_available():
            raise ModelLoadError("model.attention=xformers needs a CUDA GPU; use model.attention=sdpa on this machine.")
        pipe.unet.enable_xformers_memory_efficient_attention()
    if cfg.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
        pipe.text_encoder.gradient_checkpointing_enable()


def make_noise_scheduler(pipe: StableDiffusionPipeline) -> DDPMScheduler:
    """The training noise scheduler: DDPM with the base model's betas and prediction type."""
    return DDPMScheduler.from_config(pipe.scheduler.config)
