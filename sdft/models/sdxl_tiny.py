"""A tiny, offline, deterministic SDXL-shaped pipeline for tests and smoke runs.

Same block types, module names and conditioning as SDXL base (two CLIP text towers, the second with a
projection for the pooled embedding; ``text_time`` addition embeddings fed with 6 size/crop ids), with tiny
widths: 64 px images, 8x8 latents. Every module name is also a module name of the real SDXL base
(``sdft/models/sdxl_arch.py``), so LoRA targets and key mappings carry over.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from sdft.models.tiny import TEXT_HIDDEN_SIZE, TINY_RESOLUTION, tiny_text_encoder, tiny_vae, ensure_model_folder
from sdft.models.tokenizer_vocab import build_clip_tokenizer, write_vocab_files

SDXL_TINY_MODEL_VERSION = "sdxl-tiny-v2"  # v2: the second tower is wider than the first, as in SDXL
TIME_EMBED_DIM = 8  # addition_time_embed_dim (SDXL: 256)
# The second tower's width (SDXL: 768 and 1280). It must differ from the first's: diffusers' single-file loader tells
# the towers of an original SDXL checkpoint apart by their width.
TEXT_2_HIDDEN_SIZE = 48
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
        cross_attention_dim=TEXT_HIDDEN_SIZE + TEXT_2_HIDDEN_SIZE,  # both towers' hidden states, concatenated
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + TEXT_2_HIDDEN_SIZE,  # time ids + pooled text
    )


def _tiny_text_encoder_2(text_encoder: CLIPTextModel) -> CLIPTextModelWithProjection:
    """The first tower's tiny config, wider, with OpenCLIP's gelu, plus the projection that gives SDXL its pooled
    embedding."""
    config = copy.deepcopy(text_encoder.config)
    config.hidden_act = "gelu"
    config.hidden_size = config.projection_dim = TEXT_2_HIDDEN_SIZE
    config.intermediate_size = 2 * TEXT_2_HIDDEN_SIZE
    return CLIPTextModelWithProjection(config)


def build_sdxl_tiny_pipeline() -> StableDiffusionXLPipeline:
    """Build the tiny SDXL pipeline in memory; weights are identical on every call (the caller's RNG is untouched)."""
    tokenizer = build_clip_tokenizer()
    tokenizer_2 = build_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        unet = _tiny_sdxl_unet().eval()
        vae = tiny_vae().eval()
        text_encoder = tiny_text_encoder(tokenizer).eval()
        text_encoder_2 = _tiny_text_encoder_2(text_encoder).eval()
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


def _save_sdxl_tiny_pipeline(directory: Path) -> None:
    """Save the pipeline as a diffusers folder, plus CLIP's classic vocab.json/merges.txt for both tokenizers."""
    build_sdxl_tiny_pipeline().save_pretrained(directory, safe_serialization=True)
    write_vocab_files(directory / "tokenizer")
    write_vocab_files(directory / "tokenizer_2")


def ensure_sdxl_tiny_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return ``<cache_dir>/<SDXL_TINY_MODEL_VERSION>``, building it on first use (atomically, like the SD1 tiny)."""
    return ensure_model_folder(cache_dir, SDXL_TINY_MODEL_VERSION, _save_sdxl_tiny_pipeline)


def load_sdxl_tiny_pipeline(cache_dir: str | os.PathLike | None = None) -> StableDiffusionXLPipeline:
    """The cached tiny SDXL pipeline, loaded from its diffusers folder (built on first use)."""
    folder = ensure_sdxl_tiny_model(cache_dir)
    return StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True, add_watermarker=False)
