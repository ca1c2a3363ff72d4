"""Each adapter kind's kohya/LyCORIS file, merged with A1111's and ComfyUI's rules, gives the weight peft uses.

The clients' merge rules are re-implemented here on tensors from their code:
- A1111 extensions-builtin/Lora: network_lora.py (up @ down, scale alpha / down.shape[0]), network_hada.py
  (rebuild_conventional(w1a, w1b) * rebuild_conventional(w2a, w2b), alpha / w1b.shape[0]), network_lokr.py
  (make_kron(w1, w2), w1 unsqueezed when w2 is 4-D; dim = w1b/w2b.shape[0] when a factor is low-rank, scale
  alpha / dim, else 1).
- ComfyUI comfy/weight_adapter: lora.py (mm(up.flatten(1), down.flatten(1)), alpha / down.shape[0]), loha.py, lokr.py
  (same maths and scale rules), base.py weight_decompose (DoRA: dora_scale on the output axis is divided by the row
  norm of the base weight).
The reference is peft's own merge of the trained layer (checked against the layer's forward once per kind).
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from sdft.adapters.kinds import layer_adapters
from sdft.adapters.kohya import kohya_name, kohya_tensors
from sdft.adapters.lora import setup_trainable
from sdft.config import AdapterConfig, AdapterKind

KINDS = ["lora", "locon", "dora", "loha", "lokr"]


# ------------------------------------------------------------------------------ the clients' rules, re-implemented


def _scale(alpha, dim):
    return float(alpha) / dim if alpha is not None and dim is not None else 1.0


def lora_updown(t: dict, shape) -> tuple[torch.Tensor, float]:
    down, up = t["lora_down.weight"], t["lora_up.weight"]
    diff = torch.mm(up.flatten(1), down.flatten(1)).reshape(shape)
    return diff, _scale(t.get("alpha"), down.shape[0])


def loha_updown(t: dict, shape) -> tuple[torch.Tensor, float]:
    w1 = t["hada_w1_a"].reshape(t["hada_w1_a"].shape[0], -1) @ t["hada_w1_b"].reshape(t["hada_w1_b"].shape[0], -1)
    w2 = t["hada_w2_a"].reshape(t["hada_w2_a"].shape[0], -1) @ t["hada_w2_b"].reshape(t["hada_w2_b"].shape[0], -1)
    return (w1 * w2).reshape(shape), _scale(t.get("alpha"), t["hada_w1_b"].shape[0])


def lokr_updown(t: dict, shape) -> tuple[torch.Tensor, float]:
    dim = None
    if "lokr_w1" in t:
        w1 = t["lokr_w1"]
    else:
        w1, dim = t["lokr_w1_a"] @ t["lokr_w1_b"], t["lokr_w1_b"].shape[0]
    if "lokr_w2" in t:
        w2 = t["lokr_w2"]
    else:
        w2, dim = t["lokr_w2_a"] @ t["lokr_w2_b"], t["lokr_w2_b"].shape[0]
    if w2.dim() == 4:
        w1 = w1.unsqueeze(2).unsqueeze(2)
    return torch.kron(w1, w2.contiguous()).reshape(shape), _scale(t.get("alpha"), dim)


def comfy_weight_decompose(dora_scale, weight, lora_diff, alpha):
    """comfy/weight_adapter/base.py weight_decompose at strength 1 (float32)."""
    weight_calc = weight + lora_diff * alpha
    if dora_scale.shape[0] == weight_calc.shape[0]:  # wd_on_output_axis: the base weight's norm
        norm = weight.reshape(weight.shape[0], -1).norm(dim=1, keepdim=True)
        norm = norm.reshape(weight.shape[0], *[1] * (weight.dim() - 1))
    else:
        norm = weight_calc.transpose(0, 1).reshape(weight_calc.shape[1], -1).norm(dim=1, keepdim=True)
        norm = norm.reshape(weight_calc.shape[1], *[1] * (weight_calc.dim() - 1)).transpose(0, 1)
    return weight_calc * (dora_scale / (norm + torch.finfo(weight.dtype).eps))


def a1111_weight_decompose(dora_scale, weight, updown, scale):
    """A1111 extensions-builtin/Lora network.py finalize_updown -> apply_weight_decompose at multiplier 1: W + up @ down
    divided by its per-input-column norm, times dora_scale, and only then the alpha / rank scale."""
    merged = updown + weight
    shape = [merged.shape[1], *[1] * (weight.dim() - 1)]
    norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1, keepdim=True).reshape(shape).transpose(0, 1)
    return weight + (merged * (dora_scale / norm) - weight) * scale


def client_merge(client: str, weight: torch.Tensor, t: dict) -> torch.Tensor:
    if "diff" in t:  # weight differences (OFT's file): A1111 network_full.py / ComfyUI's "diff" patch, scale 1
        return weight + t["diff"].reshape(weight.shape)
    rule = loha_updown if "hada_w1_a" in t else lokr_updown if ("lokr_w1" in t or "lokr_w1_a" in t) else lora_updown
    diff, scale = rule(t, weight.shape)
    if "dora_scale" in t:
        assert client == "comfyui", "A1111 normalises DoRA on the input axis only: not exact (docs/formats.md)"
        return comfy_weight_decompose(t["dora_scale"], weight, diff, scale)
    return weight + diff * scale


# ------------------------------------------------------------------------------------------------------- helpers


def randomise(model: nn.Module, seed: int = 0) -> None:
    """Trained-looking adapter weights (peft initialises most deltas to zero, which would prove nothing)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            noise = torch.randn(param.shape, generator=gen)
            param.copy_(param * (1 + 0.1 * noise) if "magnitude" in name else 0.2 * noise)


def peft_weight(layer: BaseTunerLayer) -> torch.Tensor:
    merged = copy.deepcopy(layer)
    merged.merge(adapter_names=["default"])
    return merged.get_base_layer().weight.detach().float()


def by_module(tensors: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for key, value in tensors.items():
        name, _, part = key.partition(".")
        out.setdefault(name, {})[part] = value.float()
    return out


def check_model(model: nn.Module, text_encoder: bool, tensors: dict, client: str) -> int:
    files = by_module(tensors)
    checked = 0
    for name, layer in model.named_modules():
        if not (isinstance(layer, BaseTunerLayer) and "default" in layer_adapters(layer)):
            continue
        weight = layer.get_base_layer().weight.detach().float()
        merged = client_merge(client, weight, files[kohya_name(name, text_encoder)])
        ref = peft_weight(layer)
        assert (merged - ref).abs().max() <= 1e-5, f"{client} {name}: differs by {(merged - ref).abs().max()}"
        checked += 1
    return checked


def adapter_cfg(kind: str, **extra) -> AdapterConfig:
    targets = ["attn1", "attn2", "ff", "proj"] + (["conv"] if kind != "dora" else [])
    return AdapterConfig(
        kind=AdapterKind(kind),
        rank=4,
        alpha=2.0,
        conv_rank=2,
        conv_alpha=3.0,
        unet_targets=targets,
        text_encoder_targets=["attn", "mlp"],
        **extra,
    )


# ---------------------------------------------------------------------------------------------------------- tests


# A1111 normalises DoRA on the input axis only; peft's DoRA is output-axis: not exact there (docs/formats.md)
CASES = [(k, c) for k in KINDS for c in ("a1111", "comfyui") if (k, c) != ("dora", "a1111")]


@pytest.mark.parametrize("kind,client", CASES)
def test_tiny_model_file_merges_to_the_peft_weight(kind, client, tiny_pipe_factory):
    pipe = tiny_pipe_factory()
    setup_trainable(pipe.unet, pipe.text_encoder, adapter_cfg(kind))
    randomise(pipe.unet)
    randomise(pipe.text_encoder, 1)
    tensors = kohya_tensors(pipe.unet, pipe.text_encoder)
    assert all(k.startswith(("lora_unet_", "lora_te_text_model_")) for k in tensors)
    assert check_model(pipe.unet, False, tensors, client) > 10
    assert check_model(pipe.text_encoder, True, tensors, client) == 12  # 2 layers x (4 attn + 2 mlp)


@pytest.mark.parametrize("kind", KINDS)
def test_peft_merge_is_what_the_layer_computes(kind, tiny_pipe_factory):
    """The reference (peft's merge) equals the adapted layer's forward, for a Linear and a 3x3 conv."""
    pipe = tiny_pipe_factory()
    setup_trainable(pipe.unet, pipe.text_encoder, adapter_cfg(kind))
    randomise(pipe.unet)
    layers = {n: m for n, m in pipe.unet.named_modules() if isinstance(m, BaseTunerLayer)}
    names = ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"]
    if kind != "dora":
        names.append("down_blocks.0.resnets.0.conv1")
    torch.manual_seed(0)
    with torch.no_grad():
        for name in names:
            layer = layers[name]
            base = layer.get_base_layer()
            x = (
                torch.randn(2, 5, base.in_features)
                if isinstance(base, nn.Linear)
                else torch.randn(1, base.in_channels, 8, 8)
            )
            merged = copy.deepcopy(base)
            merged.weight.data = peft_weight(layer)
            assert (layer(x) - merged(x)).abs().max() <= 1e-5, name


def _materialise(meta_model: nn.Module, names: list[str]) -> nn.Module:
    """Keep only the named leaf layers of a meta-device model, on CPU with random weights (SD 1.5 names and shapes
    without building 860 M parameters)."""
    keep = set(names)
    for name, module in list(meta_model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if full in keep:
                child.to_empty(device="cpu")
                nn.init.normal_(child.weight, std=0.05)
            elif not any(k.startswith(full + ".") for k in keep):
                delattr(module, child_name)
    return meta_model


SD15_UNET = [
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k",  # cross-attention: 768 -> 640
    "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj",
    "up_blocks.3.attentions.2.proj_out",
    "down_blocks.0.resnets.0.conv1",  # 3x3, 320 -> 320
    "up_blocks.1.resnets.0.conv_shortcut",  # 1x1, 2560 -> 1280
    "down_blocks.2.downsamplers.0.conv",
]
SD15_TE = ["text_model.encoder.layers.0.self_attn.q_proj", "text_model.encoder.layers.11.mlp.fc1"]


@pytest.mark.parametrize("kind", KINDS)
def test_sd15_names_and_shapes(kind):
    from sdft.models.sd15_arch import build_sd15_text_encoder, build_sd15_unet

    unet = _materialise(build_sd15_unet(device="meta"), SD15_UNET)
    te = build_sd15_text_encoder(device="meta")
    te_names = [n for n in (s.removeprefix("text_model.") for s in SD15_TE) if n in dict(te.named_modules())] or SD15_TE
    te = _materialise(te, te_names)
    setup_trainable(unet, te, adapter_cfg(kind))
    randomise(unet)
    randomise(te, 1)
    tensors = kohya_tensors(unet, te)
    names = {k.partition(".")[0] for k in tensors}
    expect = {"lora_unet_" + n.replace(".", "_") for n in SD15_UNET if kind != "dora" or "conv" not in n}
    assert names == expect | {"lora_te_" + n.replace(".", "_") for n in SD15_TE}
    for client in ("a1111", "comfyui") if kind != "dora" else ("comfyui",):
        assert check_model(unet, False, tensors, client) == len(expect)
        assert check_model(te, True, tensors, client) == 2
    if kind == "lokr":  # SD 1.5 widths make LoKr's second factor low-rank (the alpha / rank path)
        assert any(k.endswith("lokr_w2_a") for k in tensors) and any(k.endswith(".lokr_w2") for k in tensors) is False
