"""The Stable Diffusion 1.5 architecture with random weights, for speed and memory benchmarks.

Configs are those of ``stable-diffusion-v1-5/stable-diffusion-v1-5`` (unet/, vae/ and
text_encoder/ ``config.json``); nothing is downloaded.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

SD15_UNET_CONFIG: dict = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
}

# The published vae/config.json omits scaling_factor; 0.18215 is the value SD 1.x uses.
SD15_VAE_CONFIG: dict = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# CLIP ViT-L/14 text tower. The token ids here are the config file's (legacy) values; with
# eos_token_id == 2 transformers pools at argmax(input_ids), i.e. at CLIP's <|endoftext|>.
SD15_TEXT_ENCODER_CONFIG: dict = {
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}


def _finish(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast to ``dtype`` (only if needed: diffusers warns on every cast) and set eval mode."""
    if next(model.parameters()).dtype != dtype:
        model = model.to(dtype=dtype)
    return model.eval()


def build_sd15_unet(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> UNet2DConditionModel:
    """SD 1.5 U-Net (859,520,964 params), randomly initialised on ``device``."""
    with torch.device(device):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    return _finish(unet, dtype)


def build_sd15_vae(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> AutoencoderKL:
    """SD 1.5 KL autoencoder (83,653,863 params), randomly initialised on ``device``."""
    with torch.device(device):
        vae = AutoencoderKL(**SD15_VAE_CONFIG)
    return _finish(vae, dtype)


def build_sd15_text_encoder(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> CLIPTextModel:
    """SD 1.5 CLIP ViT-L/14 text encoder (123,060,480 params), randomly initialised."""
    with torch.device(device):
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_ENCODER_CONFIG))
    return _finish(text_encoder, dtype)
