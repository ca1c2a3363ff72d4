"""The SDXL base 1.0 architecture with random weights, for key names and benchmarks.

Configs are those of ``stabilityai/stable-diffusion-xl-base-1.0`` (unet/, vae/, text_encoder/ and
text_encoder_2/ ``config.json``); nothing is downloaded. Build on ``torch.device("meta")`` to list module
names in a second without allocating the 2.6 B parameters.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from sdft.models.sd15_arch import SD15_TEXT_ENCODER_CONFIG, SD15_VAE_CONFIG

SDXL_UNET_CONFIG: dict = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,  # 6 time ids x 256 + 1280 pooled text embedding
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}

# SD 1.x's VAE layout; SDXL's latents are scaled by 0.13025 and the VAE is upcast to fp32 (fp16 NaNs).
SDXL_VAE_CONFIG: dict = {**SD15_VAE_CONFIG, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}

# text_encoder: CLIP ViT-L/14, the SD 1.x tower (SDXL reads its penultimate hidden states).
SDXL_TEXT_ENCODER_CONFIG: dict = dict(SD15_TEXT_ENCODER_CONFIG)

# text_encoder_2: OpenCLIP ViT-bigG/14 text tower with its projection (pooled embedding).
SDXL_TEXT_ENCODER_2_CONFIG: dict = {
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 5120,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "pad_token_id": 1,
    "projection_dim": 1280,
    "vocab_size": 49408,
}


def _finish(model: nn.Module, dtype: torch.dtype, device: str | torch.device) -> nn.Module:
    """Cast to ``dtype`` (only if needed, and never on meta tensors) and set eval mode."""
    if torch.device(device).type != "meta" and next(model.parameters()).dtype != dtype:
        model = model.to(dtype=dtype)
    return model.eval()


def build_sdxl_unet(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> UNet2DConditionModel:
    """SDXL base U-Net (2,567,463,684 params), randomly initialised on ``device``."""
    with torch.device(device):
        unet = UNet2DConditionModel(**SDXL_UNET_CONFIG)
    return _finish(unet, dtype, device)


def build_sdxl_vae(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> AutoencoderKL:
    """SDXL KL autoencoder (SD 1.x layout, scaling factor 0.13025), randomly initialised."""
    with torch.device(device):
        vae = AutoencoderKL(**SDXL_VAE_CONFIG)
    return _finish(vae, dtype, device)


def build_sdxl_text_encoders(
    dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[CLIPTextModel, CLIPTextModelWithProjection]:
    """SDXL's two text towers (CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 with projection), randomly initialised."""
    with torch.device(device):
        te1 = CLIPTextModel(CLIPTextConfig(**SDXL_TEXT_ENCODER_CONFIG))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_ENCODER_2_CONFIG))
    return _finish(te1, dtype, device), _finish(te2, dtype, device)


def sdxl_module_names() -> dict[str, set[str]]:
    """Names of every module of the real SDXL base, per component (``unet``, ``text_encoder``,
    ``text_encoder_2``): what adapter key names (diffusers and kohya) must map onto. Built on the meta device."""
    te1, te2 = build_sdxl_text_encoders(device="meta")
    models = {"unet": build_sdxl_unet(device="meta"), "text_encoder": te1, "text_encoder_2": te2}
    return {part: {name for name, _ in model.named_modules() if name} for part, model in models.items()}
