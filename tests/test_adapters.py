"""LoRA targets exactly the preset's modules, only LoRA parameters train, and saved files reproduce the outputs."""

from __future__ import annotations

from sdft.adapters.lora import setup_trainable
from sdft.models.params import count_params

import re

import numpy as np
import pytest
import torch

from helpers.config import compose_config
from helpers.loras import randomise_lora
from helpers.compare import render
from sdft.adapters.formats import save_lora
from sdft.config import AdapterConfig
from sdft.errors import ConfigError

ATTN = {"to_q", "to_k", "to_v", "to_out.0"}
TE_ATTN = {"q_proj", "k_proj", "v_proj", "out_proj"}


def lora_module_names(model) -> set[str]:
    return {n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A." in n}


def expected_unet(unet, kinds: set[str]) -> set[str]:
    names = set()
    for name, _ in unet.named_modules():
        m = re.search(r"(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)$", name)
        if m and m.group(1) in kinds:
            names.add(name)
        if "ff" in kinds and re.search(r"\.ff\.net\.(0\.proj|2)$", name):
            names.add(name)
    return names


@pytest.mark.parametrize(
    "preset,unet_kinds,te_suffixes",
    [
        ("lora_attn", {"attn1", "attn2"}, TE_ATTN),
        ("lora_attn_ff", {"attn1", "attn2", "ff"}, TE_ATTN | {"fc1", "fc2"}),
    ],
)
def test_lora_targets_exactly_the_preset(preset, unet_kinds, te_suffixes, tiny_pipe_factory):
    pipe = tiny_pipe_factory()
    cfg = compose_config([f"adapter={preset}"]).adapter
    setup_trainable(pipe.unet, pipe.text_encoder, cfg)
    assert lora_module_names(pipe.unet) == expected_unet(pipe.unet, unet_kinds)
    te_names = lora_module_names(pipe.text_encoder)
    assert te_names and {n.rsplit(".", 1)[-1] for n in te_names} == te_suffixes
    assert len(te_names) == 2 * len(te_suffixes)  # tiny text encoder has 2 layers
    for model in (pipe.unet, pipe.text_encoder):
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n for n in trainable)
        assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if p.requires_grad)
    # parameter count: rank * (in + out) per adapted Linear
    expected = sum(
        cfg.rank * (m.in_features + m.out_features)
        for n, m in pipe.unet.named_modules()
        if n in expected_unet(pipe.unet, unet_kinds)
    )
    assert count_params(pipe.unet)[0] == expected


def test_cross_attention_only_leaves_self_attention_alone(tiny_pipe_factory):
    pipe = tiny_pipe_factory()
    setup_trainable(pipe.unet, pipe.text_encoder, AdapterConfig(unet_targets=["attn2"], train_text_encoder=False))
    names = lora_module_names(pipe.unet)
    assert names and all(".attn2." in n for n in names)
    assert not lora_module_names(pipe.text_encoder)
    assert count_params(pipe.text_encoder)[0] == 0


def test_full_trains_the_unet_and_no_lora(tiny_pipe_factory):
    pipe = tiny_pipe_factory()
    setup_trainable(pipe.unet, pipe.text_encoder, compose_config(["adapter=full"]).adapter)
    trainable, total = count_params(pipe.unet)
    assert trainable == total > 0
    assert not lora_module_names(pipe.unet)
    assert count_params(pipe.text_encoder)[0] == 0


def test_unknown_target_group_is_a_clear_error(tiny_pipe_factory):
    pipe = tiny_pipe_factory()
    with pytest.raises(ConfigError, match=r"attn3.*Valid: \['attn1', 'attn2', 'conv', 'ff', 'proj'\]"):
        setup_trainable(pipe.unet, pipe.text_encoder, AdapterConfig(unet_targets=["attn3"]))


def perturb_lora(model, seed: int) -> None:
    """Stand-in for training: give every LoRA weight a non-zero seeded value."""
    randomise_lora([model], seed, 0.2)


@pytest.mark.parametrize(
    "preset,train_te,alpha",
    [
        ("lora_attn", True, None),
        ("lora_attn_ff", True, 3.0),
        ("lora_attn_ff", False, 3.0),
        ("lora_all", True, 8.0),
    ],
)
def test_saved_lora_reproduces_outputs_in_diffusers(preset, train_te, alpha, tiny_pipe_factory, tmp_path):
    pipe = tiny_pipe_factory()
    cfg = compose_config(
        [f"adapter={preset}", f"adapter.train_text_encoder={train_te}", f"adapter.alpha={alpha or 'null'}"]
    ).adapter
    setup_trainable(pipe.unet, pipe.text_encoder, cfg)
    perturb_lora(pipe.unet, 1)
    perturb_lora(pipe.text_encoder, 2)
    trained = render(pipe)
    path = save_lora(pipe.unet, pipe.text_encoder, tmp_path / "lora.safetensors")

    fresh = tiny_pipe_factory()
    base = render(fresh)
    fresh.load_lora_weights(str(path))
    loaded = render(fresh)
    assert np.abs(loaded - base).max() > 1e-3, "the LoRA has no effect after loading"
    assert np.abs(loaded - trained).max() <= 1e-4
