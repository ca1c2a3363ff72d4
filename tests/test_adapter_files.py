"""Files of every adapter kind load back: in sdft's Generator (generate / ui), as phase.init_lora, in `sdft export`'s
merge, and in diffusers' load_lora_weights where diffusers supports the kind; each reproduces the trained model."""

from __future__ import annotations

import pytest

from helpers.compare import max_diff, render
from sdft.adapters.formats import save_lora
from sdft.adapters.kohya import kohya_metadata, save_kohya_lora
from sdft.adapters.load import load_lora_into
from sdft.adapters.lora import setup_trainable
from sdft.config import AdapterConfig, AdapterKind, ModelConfig
from sdft.adapters.export import merge_loras
from sdft.generation.generator import Generator
from test_adapter_merge_rules import randomise

TOL = 1e-4


def trained(kind: str, tiny_pipe_factory, tmp_path, text_encoder: bool = True):
    """A tiny pipeline with a randomised adapter of `kind`, its reference image, and its files."""
    pipe = tiny_pipe_factory()
    extra = {"oft_block_size": 8} if kind == "oft" else {"conv_rank": 2, "conv_alpha": 3.0}
    targets = ["attn1", "attn2", "ff"] + (["conv"] if kind in ("locon", "loha", "lokr") else [])
    setup_trainable(
        pipe.unet,
        pipe.text_encoder,
        AdapterConfig(
            kind=AdapterKind(kind), rank=4, alpha=2.0, unet_targets=targets, train_text_encoder=text_encoder, **extra
        ),
    )
    randomise(pipe.unet, 0)
    randomise(pipe.text_encoder, 1)
    want = render(pipe)
    assert max_diff(want, render(tiny_pipe_factory())) > 1e-3  # the adapter changes the image
    files = {"sdft": save_lora(pipe.unet, pipe.text_encoder, tmp_path / "pytorch_lora_weights.safetensors")}
    if kind != "oft":  # OFT's kohya file (`.diff`) is for A1111/ComfyUI; sdft reads OFT's sdft file (test_oft_file.py)
        files["kohya"] = save_kohya_lora(
            pipe.unet, pipe.text_encoder, tmp_path / f"{kind}.safetensors", kohya_metadata(base_model="tiny")
        )
    return want, files


KINDS = ["locon", "loha", "lokr", "dora", "oft"]


@pytest.mark.parametrize("kind", KINDS)
def test_files_reload_in_sdft(kind, tiny_pipe_factory, tiny_cache, tmp_path):
    want, files = trained(kind, tiny_pipe_factory, tmp_path)
    for fmt, path in files.items():
        gen = Generator(ModelConfig(path="tiny", cache_dir=str(tiny_cache)), device="cpu")
        gen.set_loras([str(path)])
        assert max_diff(render(gen.pipe), want) <= TOL, (fmt, "generator")
        fresh = tiny_pipe_factory()
        load_lora_into(fresh.unet, fresh.text_encoder, path)
        assert max_diff(render(fresh), want) <= TOL, (fmt, "init_lora")
        merged = tiny_pipe_factory()
        merge_loras(merged, [(path, 1.0)])
        assert not any(
            "lora" in n or "hada" in n or "lokr" in n or "oft_R" in n for n, _ in merged.unet.named_parameters()
        )
        assert max_diff(render(merged), want) <= TOL, (fmt, "export merge")


@pytest.mark.parametrize("kind", ["locon", "dora"])
def test_diffusers_loads_what_it_supports(kind, tiny_pipe_factory, tmp_path):
    """diffusers 0.42 reads LoRA/LoCon (both files) and DoRA (the sdft/diffusers file; U-Net only: with transformers 5
    it drops the text encoder's DoRA magnitudes, with a warning table); not LoHa/LoKr/OFT."""
    want, files = trained(kind, tiny_pipe_factory, tmp_path, text_encoder=kind != "dora")
    for fmt in ("sdft", "kohya") if kind == "locon" else ("sdft",):
        pipe = tiny_pipe_factory()
        pipe.load_lora_weights(str(files[fmt]))
        assert max_diff(render(pipe), want) <= TOL, fmt


def test_weighted_loha_in_the_generator(tiny_pipe_factory, tiny_cache, tmp_path):
    """A LoHa's weight scales its delta like a LoRA's (peft set_scale), 0 gives the base image."""
    _, files = trained("loha", tiny_pipe_factory, tmp_path)
    gen = Generator(ModelConfig(path="tiny", cache_dir=str(tiny_cache)), device="cpu")
    from sdft.generation.params import LoraSpec

    gen.set_loras([LoraSpec(str(files["kohya"]), 0.0)])
    assert max_diff(render(gen.pipe), render(tiny_pipe_factory())) <= TOL
    gen.set_loras([LoraSpec(str(files["kohya"]), 0.5)])
    assert max_diff(render(gen.pipe), render(tiny_pipe_factory())) > 1e-3


def test_diffusers_file_has_conventional_text_encoder_names_and_reads_old_ones(tiny_pipe_factory, tmp_path):
    """Issue item 4: `text_encoder.text_model.encoder...` keys are written; files with transformers-5 names
    (`text_encoder.encoder...`, as sdft wrote before) still load, in sdft and in diffusers."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    want, files = trained("lora", tiny_pipe_factory, tmp_path)
    with safe_open(str(files["sdft"]), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    te_keys = [k for k in state if k.startswith("text_encoder.")]
    assert te_keys and all(k.startswith("text_encoder.text_model.encoder.layers.") for k in te_keys)
    old = tmp_path / "old.safetensors"
    save_file({k.replace("text_encoder.text_model.", "text_encoder."): v for k, v in state.items()}, str(old), meta)
    for path in (files["sdft"], old):
        pipe = tiny_pipe_factory()
        load_lora_into(pipe.unet, pipe.text_encoder, path)
        assert max_diff(render(pipe), want) <= TOL, path
        pipe = tiny_pipe_factory()
        pipe.load_lora_weights(str(path))
        assert max_diff(render(pipe), want) <= TOL, path
