"""Base models from single-file checkpoints (original A1111/civitai layout), VAE overrides, and CLIP skip."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from helpers.compare import same_weights
from sdft.config import ModelConfig
from sdft.errors import ConfigError, ModelLoadError
from sdft.families.load import load_pipeline
from sdft.families.single_file import pipeline_to_original, save_single_file
from sdft.models.original_layout import VAE_PREFIX, vae_to_original
from sdft.models.text import diffusers_clip_skip, prompt_embeds, text_states
from sdft.run.train import run


def test_train_on_a_single_file_checkpoint(fast_config, tiny_dir, tiny_pipe_factory, tmp_path):
    base = tiny_pipe_factory()
    path = save_single_file(base, tmp_path / "model.safetensors", dtype=torch.float32)
    pipe = load_pipeline(ModelConfig(path=str(path), config=str(tiny_dir)))
    for name in ("unet", "vae", "text_encoder"):
        assert same_weights(getattr(pipe, name), getattr(base, name)), name
    summary = run(fast_config(f"model.path={path}", f"model.config={tiny_dir}"))
    assert summary["steps"] == 3 and summary["model"] == str(path)
    assert Path(summary["output"]).is_file()


def test_pickle_checkpoint_refused_unless_allowed(tiny_dir, tiny_pipe_factory, tmp_path):
    base = tiny_pipe_factory()
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": pipeline_to_original(base, torch.float32)}, ckpt)
    with pytest.raises(ModelLoadError, match=r"pickle.*can run arbitrary code.*model\.allow_pickle=true"):
        load_pipeline(ModelConfig(path=str(ckpt), config=str(tiny_dir)))
    pipe = load_pipeline(ModelConfig(path=str(ckpt), config=str(tiny_dir), allow_pickle=True))
    assert same_weights(pipe.unet, base.unet)
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(ModelLoadError, match="unknown weights file type"):
        load_pipeline(ModelConfig(path=str(tmp_path / "notes.txt"), config=str(tiny_dir)))


def test_offline_default_config_not_cached_says_what_to_pass(tiny_pipe_factory, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    path = save_single_file(tiny_pipe_factory(), tmp_path / "model.safetensors", dtype=torch.float32)
    with pytest.raises(ModelLoadError) as err:
        load_pipeline(ModelConfig(path=str(path), local_files_only=True))
    msg = str(err.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in msg and "not in the local Hugging Face cache" in msg
    assert "model.config=<local diffusers folder of the same architecture>" in msg
    with pytest.raises(ModelLoadError, match="not a diffusers pipeline"):
        load_pipeline(ModelConfig(path=str(path), config=str(tmp_path)))


def test_vae_override_from_folder_and_single_file(tiny_cache, tiny_dir, tiny_pipe_factory, tmp_path):
    other = AutoencoderKL.from_pretrained(tiny_dir, subfolder="vae")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    other.save_pretrained(tmp_path / "vae_dir")
    sd = vae_to_original(other.state_dict(), other.config)
    save_file(sd, tmp_path / "vae_bare.safetensors")  # as sd-vae-ft-mse's single file: no prefix
    save_file({VAE_PREFIX + k: v for k, v in sd.items()}, tmp_path / "vae_prefixed.safetensors")
    base = tiny_pipe_factory()
    assert not same_weights(base.vae, other)
    for spec in ("vae_dir", "vae_bare.safetensors", "vae_prefixed.safetensors"):
        pipe = load_pipeline(ModelConfig(path="tiny", cache_dir=str(tiny_cache), vae=str(tmp_path / spec)))
        assert same_weights(pipe.vae, other), spec
        assert same_weights(pipe.unet, base.unet), spec
    pipe = load_pipeline(ModelConfig(path="tiny", cache_dir=str(tiny_cache), vae=str(tiny_dir)))  # vae/ sub-folder
    assert same_weights(pipe.vae, base.vae)
    torch.save(sd, tmp_path / "vae.pt")
    with pytest.raises(ModelLoadError, match="pickle"):
        load_pipeline(ModelConfig(path="tiny", cache_dir=str(tiny_cache), vae=str(tmp_path / "vae.pt")))


def test_clip_skip_text_states_match_diffusers(tiny_pipe_factory, monkeypatch):
    pipe = tiny_pipe_factory()
    encoder = pipe.text_encoder
    ids = pipe.tokenizer(
        ["photo of sks person"], padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        last = text_states(encoder, ids, 1)
        penultimate = text_states(encoder, ids, 2)
        assert torch.equal(last, encoder(ids)[0])
        assert (penultimate - last).abs().max() > 1e-3  # clip skip 2 changes what the U-Net sees
        if not hasattr(encoder, "text_model"):
            # diffusers 0.42 reads text_encoder.text_model.final_layer_norm, gone in transformers 5
            # (huggingface/diffusers#14124); give it the transformers-4 attribute so its own clip_skip code runs
            shim = types.SimpleNamespace(final_layer_norm=encoder.final_layer_norm)
            monkeypatch.setattr(encoder, "text_model", shim, raising=False)
        prompt = "photo of sks person"
        ref, ref_neg = pipe.encode_prompt(prompt, "cpu", 1, True, "", clip_skip=diffusers_clip_skip(2))
        ref_last, _ = pipe.encode_prompt(prompt, "cpu", 1, True, "", clip_skip=diffusers_clip_skip(1))
        embeds = prompt_embeds(pipe, ["photo of sks person"], None, clip_skip=2)
    assert diffusers_clip_skip(1) is None and diffusers_clip_skip(2) == 1
    assert torch.allclose(ref, penultimate, atol=1e-6, rtol=0)
    assert torch.allclose(ref_last, last, atol=1e-6, rtol=0)
    assert torch.allclose(embeds["prompt_embeds"], ref, atol=1e-6, rtol=0)
    # diffusers applies clip_skip to the prompt only; A1111 (and prompt_embeds) to the negative prompt as well
    with torch.no_grad():
        empty = pipe.tokenizer(
            [""], padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt"
        ).input_ids
        assert torch.allclose(ref_neg, text_states(encoder, empty, 1), atol=1e-6, rtol=0)
        assert torch.allclose(embeds["negative_prompt_embeds"], text_states(encoder, empty, 2), atol=1e-6, rtol=0)
    for bad in (0, encoder.config.num_hidden_layers + 1):
        with pytest.raises(ConfigError, match="clip_skip"):
            text_states(encoder, ids, bad)


def test_damaged_or_vae_less_single_file_is_one_clear_error(tiny_dir, tiny_pipe_factory, tmp_path):
    """Issue 33 item 5: a truncated file is a ModelLoadError naming it (not a SafetensorError); a file without VAE
    weights asks for model.vae and, given it, loads with that VAE."""
    base = tiny_pipe_factory()
    path = save_single_file(base, tmp_path / "model.safetensors", dtype=torch.float32)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=r"truncated\.safetensors: not a readable checkpoint"):
        load_pipeline(ModelConfig(path=str(truncated), config=str(tiny_dir)))
    state = pipeline_to_original(base, torch.float32)
    no_vae = tmp_path / "no_vae.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith(VAE_PREFIX)}, str(no_vae))
    with pytest.raises(ModelLoadError, match=r"no VAE weights .*model\.vae="):
        load_pipeline(ModelConfig(path=str(no_vae), config=str(tiny_dir)))
    pipe = load_pipeline(ModelConfig(path=str(no_vae), config=str(tiny_dir), vae=str(tiny_dir)))
    assert same_weights(pipe.vae, base.vae) and same_weights(pipe.unet, base.unet)
