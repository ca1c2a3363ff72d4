"""A tiny, offline, deterministic Stable Diffusion 1.x-shaped pipeline for tests and smoke runs.

Same block types, layer counts and module names as SD 1.5 (so LoRA targets and key mappings
carry over), with tiny channel widths: a few million parameters, 64 px images, 8x8 latents.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from sdft.models.tokenizer_vocab import build_clip_tokenizer, write_vocab_files

TINY_MODEL_VERSION = "tiny-v1"
TINY_RESOLUTION = 64
TEXT_HIDDEN_SIZE = 32
_SEED = 1234

SD15_SCHEDULER_CONFIG: dict = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
    "prediction_type": "epsilon",
    "trained_betas": None,
}


def tiny_unet(**changes) -> UNet2DConditionModel:
    """SD 1.x U-Net layout (3 cross-attention levels + 1 plain) with tiny widths; `changes`: another family's
    config values (SD 2.x: linear projection, head dims per block: sdft/families/sd2_arch.py)."""
    config = dict(
        sample_size=TINY_RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=2,
        norm_num_groups=8,
        attention_head_dim=4,
        cross_attention_dim=TEXT_HIDDEN_SIZE,
        use_linear_projection=False,
    )
    return UNet2DConditionModel(**{**config, **changes})


def tiny_vae() -> AutoencoderKL:
    """SD-style KL autoencoder: 4 blocks, so 64 px images map to 8x8x4 latents."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=2,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=TINY_RESOLUTION,
        scaling_factor=0.18215,
    )


def tiny_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A 2-layer CLIP text tower sized to the tokenizer's vocabulary."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        hidden_act="quick_gelu",
        projection_dim=TEXT_HIDDEN_SIZE,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_tiny_pipeline() -> StableDiffusionPipeline:
    """Build the tiny pipeline in memory; weights are identical on every call.

    Weights come from a fixed seed inside ``torch.random.fork_rng``, so the caller's global
    RNG state is left untouched. Models are in eval mode, as ``from_pretrained`` returns them.
    """
    tokenizer = build_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        unet = tiny_unet().eval()
        vae = tiny_vae().eval()
        text_encoder = tiny_text_encoder(tokenizer).eval()
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**SD15_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def default_cache_dir() -> Path:
    """``$SDFT_CACHE_DIR`` if set, else ``~/.cache/sdft``."""
    env = os.environ.get("SDFT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sdft"


def _is_complete(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def _save_tiny_pipeline(directory: Path) -> None:
    """Save the pipeline as a diffusers folder, plus CLIP's classic vocab.json/merges.txt."""
    build_tiny_pipeline().save_pretrained(directory, safe_serialization=True)
    write_vocab_files(directory / "tokenizer")


def ensure_tiny_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return ``<cache_dir>/<TINY_MODEL_VERSION>``, building it on first use."""
    return ensure_model_folder(cache_dir, TINY_MODEL_VERSION, _save_tiny_pipeline)


def ensure_model_folder(cache_dir: str | os.PathLike | None, version: str, save: Callable[[Path], None]) -> Path:
    """Return ``<cache_dir>/<version>``, written by ``save(folder)`` on first use.

    The folder is written to a temporary sibling and renamed into place, so readers never
    see a half-written model; if another process wins the race, its copy is kept.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / version
    if _is_complete(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
    try:
        save(tmp)
        os.rename(tmp, target)
    except OSError:
        if not _is_complete(target):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
