"""The tiny offline SDXL-shaped pipeline, the real SDXL architecture's module names, and model.family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from sdft.config import ModelConfig, ModelFamily
from sdft.errors import ModelLoadError
from sdft.families import pipeline_family
from sdft.families.load import load_pipeline
from sdft.models.sdxl_arch import sdxl_module_names
from sdft.models.sdxl_tiny import build_sdxl_tiny_pipeline

# Module names that SDXL LoRA files (diffusers and kohya) address; spot checks of the real architecture.
# (This transformers version names CLIPTextModel modules without `text_model.`, but keeps it in
# CLIPTextModelWithProjection: kohya key mapping must strip it for te2.)
REAL_SDXL_NAMES = {
    "unet": (
        "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q",
        "down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k",
        "mid_block.attentions.0.transformer_blocks.9.ff.net.2",
        "up_blocks.0.attentions.2.transformer_blocks.9.attn2.to_out.0",
        "up_blocks.1.attentions.2.proj_out",
        "add_embedding.linear_1",
    ),
    "text_encoder": ("encoder.layers.11.self_attn.q_proj",),
    "text_encoder_2": ("text_model.encoder.layers.31.mlp.fc2", "text_projection"),
}


@pytest.fixture(scope="module")
def real_names() -> dict[str, set[str]]:
    return sdxl_module_names()


def render(pipe) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    return pipe(
        "photo of a dog", num_inference_steps=2, height=64, width=64, generator=generator, output_type="np"
    ).images[0]


def test_real_sdxl_names(real_names):
    for part, names in REAL_SDXL_NAMES.items():
        assert set(names) <= real_names[part], part
    assert "down_blocks.0.attentions.0.proj_in" not in real_names["unet"]  # SDXL's first level has no attention


def test_tiny_sdxl_has_sdxl_shape_and_names(real_names):
    pipe = build_sdxl_tiny_pipeline()
    assert isinstance(pipe.text_encoder, CLIPTextModel)
    assert isinstance(pipe.text_encoder_2, CLIPTextModelWithProjection)
    assert pipe.unet.config.addition_embed_type == "text_time"
    assert (
        pipe.unet.config.cross_attention_dim
        == pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    )
    parts = {"unet": pipe.unet, "text_encoder": pipe.text_encoder, "text_encoder_2": pipe.text_encoder_2}
    for part, model in parts.items():
        names = {name for name, _ in model.named_modules() if name}
        assert names <= real_names[part], (part, sorted(names - real_names[part])[:5])
    assert pipeline_family(pipe) == ModelFamily.sdxl


def test_sdxl_tiny_loads_from_cache(tmp_path):
    pipe = load_pipeline(ModelConfig(path="sdxl_tiny", cache_dir=str(tmp_path)))
    assert isinstance(pipe, StableDiffusionXLPipeline)
    assert (tmp_path / "sdxl-tiny-v2" / "tokenizer_2" / "vocab.json").is_file()
    image = render(pipe)
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()
    np.testing.assert_allclose(image, render(build_sdxl_tiny_pipeline()), atol=1e-4)
    with pytest.raises(ModelLoadError, match="model.family=sd1"):
        load_pipeline(ModelConfig(path="sdxl_tiny", cache_dir=str(tmp_path), family=ModelFamily.sd1))


def test_sdxl_conditioning_matches_the_pipeline():
    from sdft.families.sdxl_text import sdxl_text_embeddings, sdxl_time_ids

    pipe = build_sdxl_tiny_pipeline()
    prompts = ["photo of a dog", "a cat"]
    ids = [
        tok(
            prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        for tok in (pipe.tokenizer, pipe.tokenizer_2)
    ]
    with torch.no_grad():
        embeds, pooled = sdxl_text_embeddings(pipe.text_encoder, pipe.text_encoder_2, *ids)
        expected, _, expected_pooled, _ = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
    torch.testing.assert_close(embeds, expected)
    torch.testing.assert_close(pooled, expected_pooled)
    time_ids = sdxl_time_ids([(96, 80), (64, 64)], [(16, 0), (0, 0)], [(64, 64), (64, 64)])
    first = pipe._get_add_time_ids(
        (96, 80),
        (16, 0),
        (64, 64),
        torch.float32,
        text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim,
    )
    torch.testing.assert_close(time_ids[:1], first)
    assert time_ids[1].tolist() == [64, 64, 0, 0, 64, 64]


def test_model_sdxl_loads_the_hub_id_with_the_sdxl_pipeline(monkeypatch):
    """model=sdxl: the hub id goes to StableDiffusionXLPipeline (no download here: from_pretrained is replaced)."""
    from helpers.config import compose_config

    calls = []

    def from_pretrained(path, **kwargs):
        calls.append((path, kwargs))
        return build_sdxl_tiny_pipeline()

    monkeypatch.setattr(StableDiffusionXLPipeline, "from_pretrained", from_pretrained)
    cfg = compose_config(["model=sdxl"]).model
    pipe = load_pipeline(cfg)
    assert calls[0][0] == "stabilityai/stable-diffusion-xl-base-1.0" and not calls[0][1]["add_watermarker"]
    assert pipeline_family(pipe) == ModelFamily.sdxl
