"""All the ways to get a base pipeline: the offline tiny model, a local diffusers folder, a hub id, or a single-file
checkpoint in the original (A1111 / civitai) layout; optionally with another VAE (`model.vae`)."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline
from diffusers.loaders.single_file_utils import SingleFileComponentError

from sdft.config import SDXL_TINY_MODEL, TINY_MODEL, TOY_MODEL, Attention, ModelConfig, ModelFamily, WeightDtype
from sdft.errors import ModelLoadError
from sdft.memory import to_dtype
from sdft.models.family import check_family, checkpoint_family, checkpoint_keys
from sdft.models.text import check_clip_skip
from sdft.models.quantize import quantize_models

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")
DTYPES = {WeightDtype.fp32: torch.float32, WeightDtype.fp16: torch.float16, WeightDtype.bf16: torch.bfloat16}
SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # default architecture for SD 1.x single files
SDXL_HUB_ID = "stabilityai/stable-diffusion-xl-base-1.0"  # default architecture for SDXL single files
DEFAULT_CONFIGS = {ModelFamily.sd1: SD15_HUB_ID, ModelFamily.sdxl: SDXL_HUB_ID}
SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
CONFIG_PATTERNS = ["**/*.json", "*.json", "*.txt", "**/*.txt", "**/*.model"]  # what diffusers fetches for a config
NO_SAFETY_CHECKER = dict(safety_checker=None, requires_safety_checker=False)


def is_offline(cfg: ModelConfig) -> bool:
    return cfg.local_files_only or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")


def _from_folder(folder: Path) -> StableDiffusionPipeline:
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"model.path={folder} is a folder but not a diffusers pipeline (no model_index.json). "
            "Point model.path at the folder that holds model_index.json, unet/, vae/, text_encoder/, tokenizer/."
        )
    if '"StableDiffusionXLPipeline"' in (folder / "model_index.json").read_text():  # an SDXL diffusers folder
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True, add_watermarker=False)
    return StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, **NO_SAFETY_CHECKER)


def _from_hub(cfg: ModelConfig) -> StableDiffusionPipeline:
    offline = is_offline(cfg)
    try:  # the token, if any, comes from HF_TOKEN or `huggingface-cli login`, never from the config
        if getattr(cfg, "family", None) == "sdxl":  # model=sdxl: SDXL's pipeline class (no safety checker there)
            from diffusers import StableDiffusionXLPipeline

            return StableDiffusionXLPipeline.from_pretrained(
                cfg.path, revision=cfg.revision, variant=cfg.variant, local_files_only=offline, add_watermarker=False
            )
        return StableDiffusionPipeline.from_pretrained(
            cfg.path, revision=cfg.revision, variant=cfg.variant, local_files_only=offline, **NO_SAFETY_CHECKER
        )
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"Could not load model.path={cfg.path!r} from the Hugging Face hub"
            f"{' (offline mode: only the local cache is searched)' if offline else ''}: {err}\n"
            "Alternatives: model=tiny (offline tiny model), model.path=<local diffusers folder>, or go online "
            "(and set HF_TOKEN in the environment for gated repos)."
        ) from err


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


def resolve_config(cfg: ModelConfig, family: ModelFamily = ModelFamily.sd1) -> str:
    """The local diffusers folder that gives a single file its architecture: model.config, default the family's base
    (SD 1.5 or SDXL base 1.0) hub id.

    A hub id is resolved to its cached config files (only json/txt, no weights) so that diffusers never goes to
    the network on its own; offline and not cached is an error that says what to pass instead. A config of the
    other family is an error.
    """
    config = cfg.config or DEFAULT_CONFIGS[family]
    local = Path(config).expanduser()
    if local.is_dir():
        if not (local / "model_index.json").is_file():
            raise ModelLoadError(
                f"model.config={config} is a folder but not a diffusers pipeline (no model_index.json)."
            )
        folder = str(local)
    elif not HUB_ID.match(config):
        raise ModelLoadError(f"model.config={config!r} is neither an existing folder nor a hub id (owner/name).")
    else:
        folder = _config_snapshot(cfg, config, family)
    _check_config_family(Path(folder), config, family, cfg.path)
    return folder


def _config_snapshot(cfg: ModelConfig, config: str, family: ModelFamily) -> str:
    from huggingface_hub import snapshot_download

    offline = is_offline(cfg)
    try:
        return snapshot_download(config, allow_patterns=CONFIG_PATTERNS, local_files_only=offline)
    except (OSError, ValueError) as err:
        where = "is not in the local Hugging Face cache (offline)" if offline else "could not be fetched from the hub"
        sdxl = family == ModelFamily.sdxl
        example = (
            "any SDXL base 1.0 diffusers folder for SDXL fine-tunes such as RealVisXL or Pony"
            if sdxl
            else "any SD 1.5 diffusers folder for SD 1.5 fine-tunes such as Realistic Vision"
        )
        default = f" (the default, {'SDXL base 1.0' if sdxl else 'SD 1.5'})" if not cfg.config else ""
        raise ModelLoadError(
            f"model.path={cfg.path} is a single-file checkpoint; its architecture comes from the diffusers config "
            f"{config!r}{default}, which {where}: {err}\n"
            f"Pass model.config=<local diffusers folder of the same architecture> ({example}), or go online once so "
            "the config files are cached."
        ) from err


def _check_config_family(folder: Path, config: str, family: ModelFamily, path: str) -> None:
    """model.config must describe a pipeline of the checkpoint's family (its model_index.json names the class)."""
    index = folder / "model_index.json"
    if not index.is_file():
        return  # diffusers itself reports a config snapshot without one
    is_sdxl = '"StableDiffusionXLPipeline"' in index.read_text()
    if is_sdxl != (family == ModelFamily.sdxl):
        raise ModelLoadError(
            f"model.config={config} is {'an SDXL' if is_sdxl else 'an SD 1.x'} pipeline but model.path={path} is a "
            f"checkpoint of family {family.value}; pass model.config=<diffusers folder of the checkpoint's "
            "architecture>."
        )


def _from_single_file(path: Path, cfg: ModelConfig) -> tuple[StableDiffusionPipeline, bool]:
    """An original-layout checkpoint through diffusers' own converter (`from_single_file`), with the pipeline class
    of its family: detected from the keys (SDXL's second text tower), checked against model.family.

    A checkpoint without VAE weights (many SDXL fine-tunes ship so) takes model.vae, loaded first and given to the
    converter; without model.vae it is one clear error before any weight loads. Returns (pipeline, whether its VAE
    is model.vae's already)."""
    from sdft.models.original_layout import VAE_PREFIX

    check_weights_file(path, cfg.allow_pickle, "model.path")
    keys = checkpoint_keys(path)
    family = checkpoint_family(path, getattr(cfg, "family", None), keys)
    has_vae = any(k.startswith(VAE_PREFIX) for k in keys)
    if not has_vae and not cfg.vae:
        example = "madebyollin/sdxl-vae-fp16-fix" if family == ModelFamily.sdxl else "stabilityai/sd-vae-ft-mse"
        raise ModelLoadError(
            f"model.path={path} holds no VAE weights ({VAE_PREFIX}*): pass the VAE it was made for as "
            f"model.vae=<hub id, diffusers folder or single file> (e.g. model.vae={example})."
        )
    config = resolve_config(cfg, family)
    if not has_vae:  # the converter cannot build the VAE from this file: it takes model.vae's
        extra_vae = dict(vae=load_vae(cfg.vae, cfg, _config_only_vae(config)))
    else:
        extra_vae = {}
    if family == ModelFamily.sdxl:
        from diffusers import StableDiffusionXLPipeline

        pipeline_class, extra = StableDiffusionXLPipeline, dict(add_watermarker=False)
        layout = "model.diffusion_model.*, first_stage_model.*, conditioner.embedders.0/1.*"
    else:
        pipeline_class, extra = StableDiffusionPipeline, NO_SAFETY_CHECKER
        layout = "model.diffusion_model.*, first_stage_model.*, cond_stage_model.*"
    try:
        pipe = pipeline_class.from_single_file(str(path), config=config, local_files_only=True, **extra, **extra_vae)
    except (OSError, ValueError, RuntimeError, KeyError, SingleFileComponentError) as err:
        raise ModelLoadError(
            f"Could not load the single-file checkpoint model.path={path} with the architecture of {config}: {err}\n"
            f"Is it an {'SDXL' if family == ModelFamily.sdxl else 'SD 1.x'} checkpoint in the original layout "
            f"({layout})? Does model.config name a diffusers folder of the same architecture?"
        ) from err
    return pipe, bool(extra_vae)


def _config_only_vae(config: str) -> AutoencoderKL:
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


def load_pipeline(cfg: ModelConfig) -> StableDiffusionPipeline:
    """Load the base pipeline named by `cfg` (nothing trainable is set up here)."""
    vae_done = False
    if cfg.path == TINY_MODEL:
        from sdft.models.tiny import ensure_tiny_model

        pipe = _from_folder(ensure_tiny_model(cfg.cache_dir))
    elif cfg.path == TOY_MODEL:
        from sdft.models.toy_weights import load_toy_pipeline

        pipe = load_toy_pipeline()
    elif cfg.path == SDXL_TINY_MODEL:
        from sdft.models.sdxl_tiny import ensure_sdxl_tiny_model

        pipe = _from_folder(ensure_sdxl_tiny_model(cfg.cache_dir))
    else:
        local = Path(cfg.path).expanduser()
        if local.is_dir():
            pipe = _from_folder(local)
        elif local.is_file():
            pipe, vae_done = _from_single_file(local, cfg)
        elif HUB_ID.match(cfg.path):
            pipe = _from_hub(cfg)
        else:
            raise ModelLoadError(
                f"model.path={cfg.path!r} is neither an existing folder or file (looked in {Path.cwd()}) nor a hub "
                "id of the form owner/name. Use model=tiny, model=toy, model=sd15, model.path=<diffusers folder> or "
                "model.path=<checkpoint>.safetensors."
            )
    if cfg.config and not (cfg.path not in (TINY_MODEL, TOY_MODEL) and Path(cfg.path).expanduser().is_file()):
        log.warning("model.config=%s is only used for single-file checkpoints; ignored for %s.", cfg.config, cfg.path)
    if cfg.vae and not vae_done:
        pipe.register_modules(vae=load_vae(cfg.vae, cfg, pipe.vae))
        log.info("VAE replaced by %s", cfg.vae)
    if cfg.prediction_type is not None:
        pipe.scheduler.register_to_config(prediction_type=cfg.prediction_type.value)
    check_clip_skip(cfg.clip_skip, pipe.text_encoder)
    check_family(cfg, pipe)
    return pipe


def prepare_models(pipe: StableDiffusionPipeline, cfg: ModelConfig) -> None:
    """Frozen dtype, quantization (model.quantize), attention backend and gradient checkpointing on the models."""
    freeze_models(pipe, cfg)
    quantize_models(pipe, getattr(cfg, "quantize", None))
    speed_options(pipe, cfg)


def freeze_models(pipe: StableDiffusionPipeline, cfg: ModelConfig) -> None:
    """Every model in the frozen dtype, without gradients, in eval mode (adapters are set up after this)."""
    dtype = DTYPES[cfg.weight_dtype]
    for model in (pipe.unet, pipe.vae, pipe.text_encoder, *filter(None, [getattr(pipe, "text_encoder_2", None)])):
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
        pipe.text_encoder.gradient_checkpointing_enable()
        if getattr(pipe, "text_encoder_2", None) is not None:  # SDXL's second text tower
            pipe.text_encoder_2.gradient_checkpointing_enable()
    if cfg.channels_last:  # NHWC convolutions: faster with tensor cores (bf16/fp16 on CUDA); no gain on most CPUs
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)


def make_noise_scheduler(pipe: StableDiffusionPipeline) -> DDPMScheduler:
    """The training noise scheduler: DDPM with the base model's betas and prediction type."""
    return DDPMScheduler.from_config(pipe.scheduler.config)
