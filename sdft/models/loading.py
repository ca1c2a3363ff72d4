"""Loading helpers every family uses: weights-file checks, another VAE (`model.vae`), frozen dtype, speed options and
the training noise scheduler. Which pipeline class and single-file layout: sdft/families/load.py asks the family."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline

from sdft.config import Attention, ModelConfig, WeightDtype
from sdft.errors import ModelLoadError
from sdft.memory import to_dtype
from sdft.models.params import text_towers
from sdft.models.quantize import quantize_models

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")
DTYPES = {WeightDtype.fp32: torch.float32, WeightDtype.fp16: torch.float16, WeightDtype.bf16: torch.bfloat16}
SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
CONFIG_PATTERNS = ["**/*.json", "*.json", "*.txt", "**/*.txt", "**/*.model"]  # what diffusers fetches for a config


def is_offline(cfg: ModelConfig) -> bool:
    return cfg.local_files_only or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")


def check_weights_file(path: Path, allow_pickle: bool, option: str) -> None:
    """Only .safetensors, or pickle formats when explicitly allowed (unpickling can run arbitrary code)."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelLoadError(
                f"{option}={path} is a pickle file ({suffix}). Loading a pickle can run arbitrary code hidden in it, "
                "so it is refused by default. Prefer the model's .safetensors file; if you trust this file, pass "
                "model.allow_pickle=true (diffusers then loads it with torch.load(weights_only=True))."
            )
        log.warning("Loading pickle file %s (model.allow_pickle=true): only do this with files you trust.", path)
    elif suffix not in SAFE_SUFFIXES:
        raise ModelLoadError(
            f"{option}={path}: unknown weights file type {suffix!r}; expected .safetensors "
            f"(or {', '.join(PICKLE_SUFFIXES)} with model.allow_pickle=true)."
        )


def config_only_vae(config: str) -> AutoencoderKL:
    """The architecture's VAE with no weights (meta tensors): load_vae reads only its config."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        return AutoencoderKL.from_config(AutoencoderKL.load_config(config, subfolder="vae"))


def load_vae(spec: str, cfg: ModelConfig, base_vae: AutoencoderKL) -> AutoencoderKL:
    """model.vae: a diffusers VAE folder (or pipeline folder with vae/), a hub id, or a single file (original or
    diffusers key layout; its architecture is the base model's VAE, e.g. sd-vae-ft-mse for SD 1.5)."""
    local = Path(spec).expanduser()
    try:
        if local.is_file():
            check_weights_file(local, cfg.allow_pickle, "model.vae")
            with tempfile.TemporaryDirectory(prefix="sdft-vae-config-") as tmp:
                base_vae.save_config(tmp)
                vae = AutoencoderKL.from_single_file(str(local), config=tmp, local_files_only=True)
        elif local.is_dir():
            sub = None if (local / "config.json").is_file() else "vae"
            if sub and not (local / "vae" / "config.json").is_file():
                raise ModelLoadError(f"model.vae={spec}: no config.json in the folder nor in its vae/ sub-folder.")
            vae = AutoencoderKL.from_pretrained(local, subfolder=sub, local_files_only=True)
        elif HUB_ID.match(spec):
            offline = is_offline(cfg)
            try:  # a VAE repo (e.g. stabilityai/sd-vae-ft-mse) or a pipeline repo with a vae/ sub-folder
                vae = AutoencoderKL.from_pretrained(spec, local_files_only=offline)
            except (OSError, ValueError):
                vae = AutoencoderKL.from_pretrained(spec, subfolder="vae", local_files_only=offline)
        else:
            raise ModelLoadError(f"model.vae={spec!r} is neither an existing file or folder nor a hub id (owner/name).")
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise ModelLoadError(f"Could not load the VAE model.vae={spec!r}: {err}") from err
    if vae.config.latent_channels != base_vae.config.latent_channels:
        raise ModelLoadError(
            f"model.vae={spec}: {vae.config.latent_channels} latent channels, the base model's U-Net expects "
            f"{base_vae.config.latent_channels}; use a VAE of the same model family."
        )
    keep_base_scaling_factor(vae, base_vae, spec)
    return vae


def keep_base_scaling_factor(vae: AutoencoderKL, base_vae: AutoencoderKL, spec: str) -> None:
    """A VAE whose config does not state its latent scale gets the base's (SDXL: 0.13025, not diffusers' default
    0.18215); a stated scale that differs from the base's is kept, with a warning (a VAE of another family?)."""
    base, own = base_vae.config.scaling_factor, vae.config.scaling_factor
    if "scaling_factor" in getattr(vae.config, "_use_default_values", []):
        if own != base:
            vae.register_to_config(scaling_factor=base)
    elif own != base:
        log.warning(
            "model.vae=%s scales latents by %s, the base model's VAE by %s: is it a VAE of the same model family?",
            spec,
            own,
            base,
        )


def prepare_models(pipe: StableDiffusionPipeline, cfg: ModelConfig) -> None:
    """Frozen dtype, quantization (model.quantize), attention backend and gradient checkpointing on the models."""
    freeze_models(pipe, cfg)
    quantize_models(pipe, getattr(cfg, "quantize", None))
    speed_options(pipe, cfg)


def freeze_models(pipe: StableDiffusionPipeline, cfg: ModelConfig) -> None:
    """Every model in the frozen dtype, without gradients, in eval mode (adapters are set up after this)."""
    dtype = DTYPES[cfg.weight_dtype]
    for model in (pipe.unet, pipe.vae, *text_towers(pipe)):
        if model.dtype != dtype:
            to_dtype(model, dtype)  # as model.to(dtype=dtype), without two copies resident at once (sdft/memory.py)
        model.requires_grad_(False)
        model.eval()


def speed_options(pipe: StableDiffusionPipeline, cfg: ModelConfig) -> None:
    """model.attention, model.gradient_checkpointing and model.channels_last (bench/ applies them after counting
    FLOPs, so that recomputation is not counted)."""
    if cfg.attention == Attention.xformers:
        if not torch.cuda.is_available():
            raise ModelLoadError("model.attention=xformers needs a CUDA GPU; use model.attention=sdpa on this machine.")
        pipe.unet.enable_xformers_memory_efficient_attention()
    if cfg.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
        for tower in text_towers(pipe):  # SDXL: both
            tower.gradient_checkpointing_enable()
    if cfg.channels_last:  # NHWC convolutions: faster with tensor cores (bf16/fp16 on CUDA); no gain on most CPUs
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)


def make_noise_scheduler(pipe: StableDiffusionPipeline) -> DDPMScheduler:
    """The training noise scheduler: DDPM with the base model's betas and prediction type."""
    return DDPMScheduler.from_config(pipe.scheduler.config)
