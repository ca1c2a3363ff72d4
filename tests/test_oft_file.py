"""OFT's kohya file: `.diff` weight differences that A1111 and ComfyUI merge to peft's OFT weight, and the evidence
that no file in their OFT format (`oft_blocks`) can.

The clients' rules, re-implemented from their code:
- `.diff` (LyCORIS algo "full"): A1111 extensions-builtin/Lora/network_full.py (updown = diff; finalize_updown scales
  by calc_scale() = 1 with no alpha/dim, times the multiplier), ComfyUI comfy/lora.py ("diff" patch:
  weight += strength * diff); test_adapter_merge_rules.client_merge replicates both at weight 1.
- `oft_blocks`: ComfyUI comfy/weight_adapter/oft.py (q = blocks - blocks^T, r = (I + q)(I - q)^-1, the weight's
  *output* rows rotated: einsum("k n m, k n ... -> k m ...", r, W)); A1111 network_oft.py likewise rotates outputs
  with a Cayley (orthogonal) block.
peft 0.21's OFT rotates the layer's *input* features: W' = W R^T.
"""

from __future__ import annotations

import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from sdft.adapters.kohya import LoraFormatError, kohya_tensors, write_kohya_file
from sdft.adapters.lora import setup_trainable
from sdft.config import AdapterConfig, AdapterKind
from test_adapter_merge_rules import SD15_TE, SD15_UNET, _materialise, check_model, peft_weight, randomise


def comfy_oft(weight: torch.Tensor, blocks: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """comfy/weight_adapter/oft.py calculate_weight, no constraint (alpha 0), float32."""
    block_num, block_size, _ = blocks.shape
    eye = torch.eye(block_size)
    q = blocks - blocks.transpose(1, 2)
    r = (eye + q) @ torch.linalg.inv(eye - q)
    _, *shape = weight.shape
    diff = torch.einsum(
        "k n m, k n ... -> k m ...", r * strength - strength * eye, weight.view(block_num, block_size, *shape)
    ).reshape(weight.shape)
    return weight + strength * diff


def oft_cfg(block: int, **extra) -> AdapterConfig:
    return AdapterConfig(kind=AdapterKind.oft, oft_block_size=block, **extra)


def check(model: nn.Module, text_encoder: bool, tensors: dict) -> int:
    """Every layer's `.diff` is a real change, and both clients' merges of it give peft's weight."""
    assert all(k.endswith(".diff") and v.abs().max() > 1e-3 for k, v in tensors.items())
    counts = {check_model(model, text_encoder, tensors, client) for client in ("a1111", "comfyui")}
    assert len(counts) == 1
    return counts.pop()


def test_tiny_model_oft_file_merges_to_the_peft_weight(tiny_pipe_factory):
    pipe = tiny_pipe_factory()
    setup_trainable(
        pipe.unet,
        pipe.text_encoder,
        oft_cfg(
            8,
            unet_targets=["attn1", "attn2", "ff", "proj"],
            text_encoder_targets=["attn", "mlp"],
            train_text_encoder=True,
        ),
    )
    randomise(pipe.unet)
    randomise(pipe.text_encoder, 1)
    tensors = kohya_tensors(pipe.unet, pipe.text_encoder)
    assert all(k.startswith(("lora_unet_", "lora_te_text_model_")) and k.endswith(".diff") for k in tensors)
    assert check(pipe.unet, False, tensors) > 10
    assert check(pipe.text_encoder, True, tensors) == 12


def test_peft_oft_merge_is_what_linear_layers_compute(tiny_pipe_factory):
    """The reference (peft's merge) is the trained layer's forward for Linear layers and 1x1 convs."""
    pipe = tiny_pipe_factory()
    setup_trainable(pipe.unet, pipe.text_encoder, oft_cfg(8, unet_targets=["attn2", "proj"], train_text_encoder=False))
    randomise(pipe.unet)
    layers = {n: m for n, m in pipe.unet.named_modules() if isinstance(m, BaseTunerLayer)}
    torch.manual_seed(0)
    with torch.no_grad():
        for name in (
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0",
        ):
            layer = layers[name]
            base = layer.get_base_layer()
            x = torch.randn(2, 5, base.in_features)
            merged = torch.nn.functional.linear(x, peft_weight(layer), base.bias)
            assert (layer(x) - merged).abs().max() <= 1e-5, name


def test_sd15_names_and_shapes():
    from sdft.models.sd15_arch import build_sd15_text_encoder, build_sd15_unet

    unet = _materialise(build_sd15_unet(device="meta"), SD15_UNET)
    te = build_sd15_text_encoder(device="meta")
    te_names = [n for n in (s.removeprefix("text_model.") for s in SD15_TE) if n in dict(te.named_modules())] or SD15_TE
    te = _materialise(te, te_names)
    setup_trainable(
        unet,
        te,
        oft_cfg(
            32,
            unet_targets=["attn1", "attn2", "ff", "proj"],
            text_encoder_targets=["attn", "mlp"],
            train_text_encoder=True,
        ),
    )
    randomise(unet)
    randomise(te, 1)
    tensors = kohya_tensors(unet, te)
    linear = [n for n in SD15_UNET if "conv" not in n]
    assert {k.partition(".")[0] for k in tensors} == (
        {"lora_unet_" + n.replace(".", "_") for n in linear} | {"lora_te_" + n.replace(".", "_") for n in SD15_TE}
    )
    assert check(unet, False, tensors) == len(linear)
    assert check(te, True, tensors) == 2


def test_no_oft_blocks_file_can_merge_to_peft_oft():
    """Evidence: for an invertible W, the only left factor M with M W = W R^T is W R^T W^-1. It is neither
    block-diagonal nor orthogonal, while the clients' oft_blocks always give a block-diagonal orthogonal one (Cayley);
    and the direct translation of peft's blocks into oft_blocks merges to another weight."""
    torch.manual_seed(0)
    block = 8
    layer = nn.Linear(32, 32, bias=False)
    model = nn.Sequential()
    model.add_module("to_q", layer)
    from peft import OFTConfig, inject_adapter_in_model

    inject_adapter_in_model(
        OFTConfig(r=0, oft_block_size=block, target_modules=["to_q"], use_cayley_neumann=False), model
    )
    with torch.no_grad():
        model.to_q.oft_R["default"].weight.normal_(std=0.2)
    weight = model.to_q.get_base_layer().weight.detach().float()
    target = peft_weight(model.to_q)
    m = target @ torch.linalg.inv(weight)
    assert (m @ weight - target).abs().max() < 1e-4
    off_block = m.clone()
    for k in range(0, 32, block):
        off_block[k : k + block, k : k + block] = 0
    assert off_block.abs().max() > 0.05  # not block-diagonal for the trained block size
    assert (m.T @ m - torch.eye(32)).abs().max() > 0.05  # not orthogonal: no single 32x32 Cayley block either
    skew = model.to_q.oft_R["default"]._pytorch_skew_symmetric(model.to_q.oft_R["default"].weight.detach(), block)
    blocks = -torch.triu(skew, 1)  # ComfyUI's Cayley of these blocks is exactly peft's R (q = -Q)
    assert (comfy_oft(weight, blocks) - target).abs().max() > 0.05


def test_oft_on_3x3_convs_is_refused(tiny_pipe_factory):
    """peft's OFT forward on a 3x3 conv (unfold, rotate, fold: overlaps summed) is not its merged conv."""
    from peft import OFTConfig, inject_adapter_in_model

    from sdft.errors import ConfigError

    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("c", nn.Conv2d(8, 8, 3, padding=1))
    inject_adapter_in_model(OFTConfig(r=0, oft_block_size=8, target_modules=["c"], use_cayley_neumann=False), model)
    with torch.no_grad():
        model.c.oft_R["default"].weight.normal_(std=0.2)
    x = torch.randn(1, 8, 6, 6)
    merged = nn.functional.conv2d(x, peft_weight(model.c), model.c.get_base_layer().bias, padding=1)
    assert (model.c(x) - merged).abs().max() > 0.1  # why sdft refuses it
    pipe = tiny_pipe_factory()
    with pytest.raises(ConfigError, match="3x3 conv"):
        setup_trainable(
            pipe.unet, pipe.text_encoder, oft_cfg(8, unet_targets=["attn1", "conv"], train_text_encoder=False)
        )


def test_oft_file_metadata_and_sdft_refuses_to_read_it(tmp_path, tiny_pipe_factory):
    from sdft.adapters.load import load_lora_into

    pipe = tiny_pipe_factory()
    setup_trainable(pipe.unet, pipe.text_encoder, oft_cfg(8, train_text_encoder=False))
    randomise(pipe.unet)
    path = write_kohya_file(
        kohya_tensors(pipe.unet, None),
        tmp_path / "oft.safetensors",
        {"ss_network_dim": "4", "ss_network_alpha": "4.0", "ss_base_model_version": "sd_v1"},
    )
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["ss_network_module"] == "lycoris.kohya" and meta["ss_network_args"] == '{"algo": "full"}'
    assert "ss_network_dim" not in meta and "ss_network_alpha" not in meta  # a diff has no rank or alpha
    fresh = tiny_pipe_factory()
    with pytest.raises(LoraFormatError, match="pytorch_lora_weights"):
        load_lora_into(fresh.unet, fresh.text_encoder, path)
