"""A tiny, offline, deterministic SDXL-shaped pipeline for tests and smoke runs.

Same block types, module names and conditioning as SDXL base (two CLIP text towers, the second with a
projection for the pooled embedding; ``text_time`` addition embeddings fed with 6 size/crop ids), with tiny
widths: 64 px images, 8x8 latents. Every module name is also a module name of the real SDXL base
(``sdft/models/sdxl_arch.py``), so LoRA targets and key mappings carry over.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

from sdft.models.tiny import TEXT_HIDDEN_SIZE, TINY_RESOLUTION, _tiny_text_encoder, _tiny_vae, default_cache_dir
from sdft.models.tokenizer_vocab import build_clip_tokenizer, write_vocab_files

SDXL_TINY_MODEL_VERSION = "sdxl-tiny-v1"
TIME_EMBED_DIM = 8  # addition_time_embed_dim (SDXL: 256)
_SEED = 4321

# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
SDXL_SCHEDULER_CONFIG: dict = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
}


def _tiny_sdxl_unet() -> UNet2DConditionModel:
    """SDXL U-Net layout (plain, then 2 cross-attention levels; 1/2/2 transformer blocks instead of 1/2/10)."""
    return UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=(32, 64, 64),
        layers_per_block=2,
        transformer_layers_per_block=(1, 2, 2),
        norm_num_groups=8,
        attention_head_dim=(2, 4, 4),
        cross_attention_dim=2 * TEXT_HIDDEN_SIZE,  # both towers' hidden states, concatenated
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + TEXT_HIDDEN_SIZE,  # time ids + pooled text
    )


def _tiny_text_encoder_2(tokenizer: CLIPTokenizer) -> CLIPTextModelWithProjection:
    """A 2-layer OpenCLIP-style tower (gelu) with the text projection that gives SDXL its pooled embedding."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        hidden_act="gelu",
        projection_dim=TEXT_HIDDEN_SIZE,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config)


def build_sdxl_tiny_pipeline() -> StableDiffusionXLPipeline:
    """Build the tiny SDXL pipeline in memory; weights are identical on every call (the caller's RNG is untouched)."""
    tokenizer = build_clip_tokenizer()
    tokenizer_2 = build_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        unet = _tiny_sdxl_unet().eval()
        vae = _tiny_vae().eval()
        text_encoder = _tiny_text_encoder(tokenizer).eval()
        text_encoder_2 = _tiny_text_encoder_2(tokenizer_2).eval()
    vae.register_to_config(scaling_factor=0.13025)  # SDXL's latent scale
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER_CONFIG),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def _is_complete(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def ensure_sdxl_tiny_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return ``<cache_dir>/<SDXL_TINY_MODEL_VERSION>``, building it on first use (written to a temporary
    sibling and renamed into place, like ``sdft.models.tiny.ensure_tiny_model``)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / SDXL_TINY_MODEL_VERSION
    if _is_complete(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SDXL_TINY_MODEL_VERSION}-", dir=root))
    try:
        build_sdxl_tiny_pipeline().save_pretrained(tmp, safe_serialization=True)
        write_vocab_files(tmp / "tokenizer")
        write_vocab_files(tmp / "tokenizer_2")
        os.rename(tmp, target)
    except OSError:
        if not _is_complete(target):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_sdxl_tiny_pipeline(cache_dir: str | os.PathLike | None = None) -> StableDiffusionXLPipeline:
    """The cached tiny SDXL pipeline, loaded from its diffusers folder (built on first use)."""
    folder = ensure_sdxl_tiny_model(cache_dir)
    return StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True, add_watermarker=False)
