"""Tests for the tiny offline SD1 pipeline, its tokenizer and the SD 1.5 architecture configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from helpers.compare import same_weights
from sdft.models import tiny
from sdft.models.sd15_arch import build_sd15_text_encoder, build_sd15_unet, build_sd15_vae
from sdft.models.tiny import (
    TINY_MODEL_VERSION,
    build_tiny_pipeline,
    default_cache_dir,
    ensure_tiny_model,
)
from sdft.models.tokenizer_vocab import PROMPT_WORDS, build_clip_tokenizer, build_merges

UNET_NAMES = (
    "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q",
    "down_blocks.2.attentions.0.transformer_blocks.0.attn2.to_k",
    "down_blocks.3.resnets.1.conv2",
    "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0",
    "up_blocks.0.resnets.2.conv1",
    "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_v",
    "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj",
    "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2",
    "down_blocks.1.attentions.0.proj_in",
    "up_blocks.2.attentions.1.proj_out",
)
TEXT_ENCODER_NAMES = (
    "encoder.layers.0.self_attn.q_proj",
    "encoder.layers.1.self_attn.out_proj",
    "encoder.layers.0.mlp.fc1",
    "encoder.layers.1.mlp.fc2",
    "final_layer_norm",
)
VAE_NAMES = (
    "encoder.down_blocks.3.resnets.1.conv2",
    "decoder.up_blocks.0.resnets.2.conv1",
    "encoder.mid_block.attentions.0.to_q",
    "quant_conv",
    "post_quant_conv",
)


@pytest.fixture(scope="module")
def pipe() -> StableDiffusionPipeline:
    return build_tiny_pipeline()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_model(tmp_path_factory.mktemp("cache"))


def test_build_is_deterministic_and_keeps_global_rng(pipe: StableDiffusionPipeline) -> None:
    torch.manual_seed(99)
    state = torch.random.get_rng_state()
    other = build_tiny_pipeline()
    assert torch.equal(torch.random.get_rng_state(), state)
    for name in ("unet", "vae", "text_encoder"):
        assert same_weights(getattr(pipe, name), getattr(other, name)), name


def test_sd_module_names(pipe: StableDiffusionPipeline) -> None:
    for component, names in (
        (pipe.unet, UNET_NAMES),
        (pipe.text_encoder, TEXT_ENCODER_NAMES),
        (pipe.vae, VAE_NAMES),
    ):
        modules = dict(component.named_modules())
        missing = [n for n in names if n not in modules]
        assert not missing, missing


def test_shapes_match_sd1(pipe: StableDiffusionPipeline) -> None:
    assert pipe.vae_scale_factor == 8
    assert pipe.vae.config.scaling_factor == 0.18215
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer)
    assert not pipe.unet.config.use_linear_projection
    params = sum(p.numel() for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters())
    assert 1_000_000 < params < 10_000_000


def test_tokenizer_ids() -> None:
    tok = build_clip_tokenizer()
    assert tok.bos_token == "<|startoftext|>"
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert (tok.bos_token_id, tok.eos_token_id) == (len(tok) - 2, len(tok) - 1)
    ids = tok("A Photo of sks person", padding="max_length", max_length=tok.model_max_length).input_ids
    assert tok.model_max_length == 77 and len(ids) == 77
    words = ["a", "photo", "of", "sks", "person"]
    assert ids[:7] == [tok.bos_token_id, *tok.convert_tokens_to_ids([w + "</w>" for w in words]), tok.eos_token_id]
    assert set(ids[7:]) == {tok.pad_token_id}
    assert 0 < min(ids[1:6]) and max(ids[1:6]) < tok.bos_token_id


def test_every_prompt_word_is_one_token() -> None:
    tok = build_clip_tokenizer()
    split = [w for w in PROMPT_WORDS if len(tok(w, add_special_tokens=False).input_ids) != 1]
    assert not split, split
    assert len(build_merges()) == len(set(build_merges()))


def test_unknown_words_fall_back_to_pieces() -> None:
    tok = build_clip_tokenizer()
    ids = tok("close-up of xyzzy", add_special_tokens=False).input_ids
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[:4] == ["close</w>", "-</w>", "up</w>", "of</w>"]
    assert "".join(tokens[4:]) == "xyzzy</w>" and len(tokens) > 5
    assert tok.decode(ids) == "close - up of xyzzy"


def test_saved_folder_layout(model_dir: Path) -> None:
    assert model_dir.name == TINY_MODEL_VERSION
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (model_dir / sub).is_dir(), sub
    for name in ("vocab.json", "merges.txt"):
        assert (model_dir / "tokenizer" / name).is_file()
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "PNDMScheduler"]
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    assert [p.name for p in model_dir.parent.iterdir()] == [TINY_MODEL_VERSION]


def test_ensure_tiny_model_is_cached(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = model_dir / "unet" / "diffusion_pytorch_model.safetensors"
    mtime = weights.stat().st_mtime_ns

    def fail() -> None:
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(tiny, "build_tiny_pipeline", fail)
    assert ensure_tiny_model(model_dir.parent) == model_dir
    assert weights.stat().st_mtime_ns == mtime


def test_ensure_tiny_model_keeps_a_racing_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / TINY_MODEL_VERSION

    def win_race(directory: Path) -> None:
        target.mkdir()
        (target / "model_index.json").write_text("{}")
        (directory / "partial").write_text("x")

    monkeypatch.setattr(tiny, "_save_tiny_pipeline", win_race)
    assert ensure_tiny_model(tmp_path) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == [TINY_MODEL_VERSION]
    assert (target / "model_index.json").read_text() == "{}"


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SDFT_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("SDFT_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "sdft"


def test_reload_offline_and_infer(model_dir: Path, pipe: StableDiffusionPipeline) -> None:
    loaded = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    assert loaded.safety_checker is None
    assert loaded.scheduler.config.steps_offset == 1 and loaded.scheduler.config.skip_prk_steps
    assert same_weights(loaded.unet, pipe.unet)
    prompt = "photo of sks person"
    assert loaded.tokenizer(prompt).input_ids == pipe.tokenizer(prompt).input_ids
    loaded.set_progress_bar_config(disable=True)
    out = loaded(
        prompt,
        num_inference_steps=2,
        height=64,
        width=64,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()


def test_sd15_param_counts() -> None:
    """The VAE is built for real; text encoder (~3 s) and U-Net (3.4 GB, ~12 s) on the meta device."""
    counts = {
        "text_encoder": (build_sd15_text_encoder(device="meta"), 123_060_480),
        "vae": (build_sd15_vae(), 83_653_863),
        "unet": (build_sd15_unet(dtype=torch.float16, device="meta"), 859_520_964),
    }
    for name, (model, expected) in counts.items():
        assert sum(p.numel() for p in model.parameters()) == expected, name
    unet = counts["unet"][0]
    assert next(unet.parameters()).dtype == torch.float16 and not unet.training
