"""The toy base model's architecture: an SD 1.x-shaped pipeline for 32 px images (8x8x4 latents).

Same block types and module names as SD 1.5 (`down_blocks.N.attentions.M.transformer_blocks.0.attn1/attn2/ff`), so
the LoRA presets of sdft/adapters/targets.py apply; three levels instead of four, small widths. The tokenizer is the
project's own CLIP-format vocabulary plus the toy-world words (appended, so existing words tokenise as before).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from sdft.models.tiny import SD15_SCHEDULER_CONFIG
from sdft.models.tokenizer_vocab import PROMPT_WORDS, build_clip_tokenizer
from sdft.toy.world import RESOLUTION, WORDS

TOY_WORDS = PROMPT_WORDS + tuple(w for w in WORDS if w not in PROMPT_WORDS)
TEXT_WIDTH = 64


def toy_tokenizer() -> CLIPTokenizer:
    return build_clip_tokenizer(TOY_WORDS)


def toy_vae() -> AutoencoderKL:
    """3 levels: 32 px -> 8x8x4 latents (vae_scale_factor 4)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        norm_num_groups=16,
        latent_channels=4,
        sample_size=RESOLUTION,
        scaling_factor=1.0,
    )


def toy_unet() -> UNet2DConditionModel:
    """2 cross-attention levels + 1 plain one on 8x8 latents."""
    return UNet2DConditionModel(
        sample_size=RESOLUTION // 4,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        norm_num_groups=16,
        attention_head_dim=8,
        cross_attention_dim=TEXT_WIDTH,
        use_linear_projection=False,
    )


def toy_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        hidden_act="quick_gelu",
        projection_dim=TEXT_WIDTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def init_pipeline(vae: AutoencoderKL, seed: int = 0) -> StableDiffusionPipeline:
    """The pretraining start: a trained VAE with a randomly initialised U-Net and text encoder."""
    tokenizer = toy_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet, text_encoder = toy_unet().eval(), toy_text_encoder(tokenizer).eval()
    return StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**SD15_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
