"""SD 2.x's architecture: the real SD 2.1 configs (as `stabilityai/stable-diffusion-2-1` and `-2-1-base` ship them in
their unet/, text_encoder/, vae/, scheduler/ config.json) and a tiny offline SD 2-shaped pipeline for tests.

SD 2.x is SD 1.x's pipeline class with another text tower and U-Net attention: the OpenCLIP ViT-H text tower as
diffusers converts it (a `CLIPTextModel`, 1024 wide, gelu, 23 layers: the original's 24th is dropped by the
conversion, so "the last layer" is OpenCLIP's penultimate, as SD 2 was trained), a U-Net with Linear
`proj_in`/`proj_out` (`use_linear_projection`) and a head dim per block (5, 10, 20, 20), cross-attention 1024 wide.
768-v predicts v at 768 px; base predicts epsilon at 512 px.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from sdft.models.sd15_arch import SD15_VAE_CONFIG
from sdft.models.tiny import ensure_model_folder, tiny_unet, tiny_vae
from sdft.models.tokenizer_vocab import build_clip_tokenizer, write_vocab_files

SD21_UNET_CONFIG: dict = {
    "sample_size": 96,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
    "upcast_attention": True,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-05,
    "center_input_sample": False,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "mid_block_scale_factor": 1,
    "dual_cross_attention": False,
    "only_cross_attention": False,
}
SD21_BASE_UNET_CONFIG: dict = {**SD21_UNET_CONFIG, "sample_size": 64, "upcast_attention": False}
SD21_TEXT_ENCODER_CONFIG: dict = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
    "hidden_act": "gelu",
    "max_position_embeddings": 77,
    "projection_dim": 512,
    "vocab_size": 49408,
    "layer_norm_eps": 1e-05,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
SD21_VAE_CONFIG: dict = {**SD15_VAE_CONFIG, "sample_size": 768}
SD21_SCHEDULER_CONFIG: dict = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "trained_betas": None,
}
SD21_BASE_SCHEDULER_CONFIG: dict = {**SD21_SCHEDULER_CONFIG, "prediction_type": "epsilon"}

SD2_TINY_MODEL_VERSION = "sd2-tiny-v1"
TINY_TEXT_HIDDEN = 48  # SD 2's tower is 1024 wide with 64-wide heads: 3 heads of 16 keep the shape family
_SEED = 2121


def build_sd21_unet(device: str | torch.device = "cpu", base: bool = False) -> UNet2DConditionModel:
    with torch.device(device):
        return UNet2DConditionModel(**(SD21_BASE_UNET_CONFIG if base else SD21_UNET_CONFIG)).eval()


def build_sd21_text_encoder(device: str | torch.device = "cpu") -> CLIPTextModel:
    with torch.device(device):
        return CLIPTextModel(CLIPTextConfig(**SD21_TEXT_ENCODER_CONFIG)).eval()


def build_sd21_vae(device: str | torch.device = "cpu") -> AutoencoderKL:
    with torch.device(device):
        return AutoencoderKL(**SD21_VAE_CONFIG).eval()


def _tiny_sd2_unet() -> UNet2DConditionModel:
    """SD 2.x's U-Net layout (linear projection, a head dim per block, upcast attention) with tiny widths."""
    return tiny_unet(
        attention_head_dim=(2, 2, 4, 4),
        cross_attention_dim=TINY_TEXT_HIDDEN,
        use_linear_projection=True,
        upcast_attention=True,
    )


def _tiny_sd2_text_encoder(tokenizer) -> CLIPTextModel:
    """A 3-layer tower shaped as SD 2's converted OpenCLIP-H (gelu, 4x MLP, 16-wide heads), tiny."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TINY_TEXT_HIDDEN,
            intermediate_size=4 * TINY_TEXT_HIDDEN,
            num_hidden_layers=3,
            num_attention_heads=TINY_TEXT_HIDDEN // 16,
            max_position_embeddings=tokenizer.model_max_length,
            hidden_act="gelu",
            projection_dim=TINY_TEXT_HIDDEN,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_sd2_tiny_pipeline(prediction_type: str = "v_prediction") -> StableDiffusionPipeline:
    """The tiny SD 2-shaped pipeline in memory (weights identical on every call; the caller's RNG untouched)."""
    tokenizer = build_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        unet, vae, text_encoder = _tiny_sd2_unet().eval(), tiny_vae().eval(), _tiny_sd2_text_encoder(tokenizer).eval()
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**{**SD21_SCHEDULER_CONFIG, "prediction_type": prediction_type}),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _save(directory: Path) -> None:
    build_sd2_tiny_pipeline().save_pretrained(directory, safe_serialization=True)
    write_vocab_files(directory / "tokenizer")


def ensure_sd2_tiny_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/sd2-tiny-v1``: the tiny SD 2-shaped model (v-prediction), built on first use."""
    return ensure_model_folder(cache_dir, SD2_TINY_MODEL_VERSION, _save)
