"""kohya/LyCORIS key format for every adapter kind, as A1111 (extensions-builtin/Lora) and ComfyUI
(comfy/weight_adapter) merge it, and the ss_* metadata read off the tensors.

Written per peft layer of adapter "default" (hand-written because no library writes SD1 LyCORIS files):
- LoRA / LoCon: `<name>.lora_down.weight`, `.lora_up.weight`, `.alpha` (conv down [r, in, kh, kw], up [out, r, 1, 1]).
- DoRA: the LoRA keys plus `<name>.dora_scale` [out, 1(, 1, 1)] (output axis). ComfyUI's weight_decompose divides by the
  row norm of the *base* weight on that axis, so we write dora_scale = m * ||W|| / ||W + s·BA||, which makes ComfyUI's
  merge equal peft's m * (W + s·BA) / ||W + s·BA|| for the base the adapter was trained on. A1111 normalises on the
  input axis only: it cannot merge peft's (output-axis) DoRA exactly (docs/formats.md).
- LoHa: `hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`, `.alpha` (peft's names and shapes are LyCORIS').
- LoKr: `lokr_w1` (or `lokr_w1_a/b`), `lokr_w2` (or `lokr_w2_a/b`), `.alpha`. Both clients apply alpha / rank only
  when a factor is low-rank and 1 otherwise, where peft always applies alpha / r: with both factors full, peft's scale
  is folded into lokr_w1.
- OFT: `<name>.diff` = W R^T - W, the weight difference peft's OFT makes (LyCORIS' `full` algo keys, which A1111's
  network_full.py and ComfyUI's lora.py add to the weight: W + strength * diff). peft's OFT rotates the layer's
  *input* features (W R^T); A1111/ComfyUI's OFT keys (`oft_blocks` / `oft_diag`) rotate its *output* rows (R W), and a
  block-diagonal rotation on one side is in general no block-diagonal rotation on the other (W R^T W^-1 is neither
  block-diagonal nor orthogonal: tests/test_oft_file.py), so no file in their OFT format merges to peft's weight. The
  diff is exact for the base it was trained on (like DoRA's dora_scale) and holds a full matrix per layer.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Callable

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from sdft.adapters.kinds import layer_adapters

ADAPTER = "default"
CONV3 = ("conv1", "conv2", "samplers_0_conv")  # kohya names of the U-Net's 3x3 convs end with one of these


class NoKohyaFormat(ValueError):
    """The adapter kind has no kohya/A1111/ComfyUI format that merges to the same weights."""


def _lora(layer, base: nn.Module) -> dict[str, torch.Tensor]:
    down, up = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
    out = {"lora_down.weight": down, "lora_up.weight": up, "alpha": torch.tensor(float(layer.lora_alpha[ADAPTER]))}
    if ADAPTER in getattr(layer, "lora_magnitude_vector", {}) and layer.use_dora.get(ADAPTER, False):
        weight = base.weight.float()
        merged = weight + layer.get_delta_weight(ADAPTER).float()  # W + s·BA, peft's own delta
        m = layer.lora_magnitude_vector[ADAPTER].weight.reshape(weight.shape[0], *[1] * (weight.dim() - 1))
        rows = lambda w: w.reshape(w.shape[0], -1).norm(dim=1).reshape(m.shape)  # noqa: E731
        out["dora_scale"] = m * rows(weight) / rows(merged)
    return out


def _loha(layer, base: nn.Module) -> dict[str, torch.Tensor]:
    if ADAPTER in layer.hada_t1:
        raise NoKohyaFormat("LoHa with Tucker (effective conv2d) layers is not written; sdft trains without it")
    out = {k: getattr(layer, k)[ADAPTER] for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")}
    return {**out, "alpha": torch.tensor(float(layer.alpha[ADAPTER]))}


def _lokr(layer, base: nn.Module) -> dict[str, torch.Tensor]:
    if ADAPTER in layer.lokr_t2:
        raise NoKohyaFormat("LoKr with Tucker (effective conv2d) layers is not written; sdft trains without it")
    out = {
        k: getattr(layer, k)[ADAPTER]
        for k in ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
        if ADAPTER in getattr(layer, k)
    }
    if "lokr_w1" in out and "lokr_w2" in out:  # clients use scale 1 here: fold peft's alpha / r in
        out["lokr_w1"] = out["lokr_w1"] * layer.scaling[ADAPTER]
    return {**out, "alpha": torch.tensor(float(layer.alpha[ADAPTER]))}


def _oft(layer, base: nn.Module) -> dict[str, torch.Tensor]:
    """`diff` = peft's rotated weight minus the base weight (peft's merge: W_flat @ R^T, R block-diagonal)."""
    weight = base.weight.float()
    flat = weight.reshape(weight.shape[0], -1)  # convs: [out, in*kh*kw], the order peft unfolds a patch in
    rotation = layer.get_delta_weight(ADAPTER).float()
    return {"diff": (flat @ rotation.T - flat).reshape(weight.shape)}


WRITERS: dict[str, Callable] = {"LoraLayer": _lora, "LoHaLayer": _loha, "LoKrLayer": _lokr, "OFTLayer": _oft}


def _writer(layer: BaseTunerLayer) -> Callable:
    for cls in type(layer).__mro__:
        if cls.__name__ in WRITERS:
            return WRITERS[cls.__name__]
    raise NoKohyaFormat(f"{type(layer).__name__} has no kohya format")


def layer_tensors(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """module name -> {kohya suffix: tensor} for every peft layer of adapter "default" in `model`."""
    out = {}
    with torch.no_grad():
        for name, layer in model.named_modules():
            if isinstance(layer, BaseTunerLayer) and ADAPTER in layer_adapters(layer):
                tensors = _writer(layer)(layer, layer.get_base_layer())
                out[name] = {k: v.detach().float().cpu() for k, v in tensors.items()}
    return out


# Measured with A1111's rule on a DoRA trained on the toy base (bench/dora_a1111.py, docs/formats.md)
A1111_DORA_ERROR = (
    "on a DoRA trained on the toy base, max |ΔW| 0.16 (median over layers 0.055) where the trained change is 0.17, "
    "55% of the change's norm, images up to 0.14 off (0..1)"
)


def a1111_dora_note(path, sdxl: bool = False) -> str:
    """The warning a DoRA run ends with: A1111 merges its kohya file inexactly (why, by how much, what to do)."""
    todo = (
        "sdft has no SDXL converter to a plain LoRA yet: use ComfyUI or sdft for this file"
        if sdxl
        else f"for A1111, make a plain LoRA of it: sdft lora extract OUT.safetensors --base <this run's base> "
        f"--tuned {path} --rank <rank>"
    )
    return (
        f"DoRA file {path}: exact in ComfyUI and sdft, but A1111 (v1.10.1) normalises DoRA per input column where "
        f"peft (and ComfyUI) normalise per output row, so A1111 merges these layers off: {A1111_DORA_ERROR} "
        f"(bench/dora_a1111.py, docs/formats.md); {todo}."
    )


KIND_KEYS = {
    "loha": r"\.hada_w[12]_[ab]\b",
    "lokr": r"\.lokr_w[12]",
    "dora": r"\.(dora_scale|lora_magnitude_vector)\b",
    "oft": r"\.(oft_blocks|oft_diag|oft_R)\b",
    "full": r"\.diff\b",
}


def file_kind(keys) -> str | None:
    """The kind a LoRA-style file holds ("loha", "lokr", "dora", "oft"; "full" for `.diff` weight differences, as
    OFT's kohya file; kohya or peft keys), None for LoRA / LoCon."""
    text = "\n".join(keys)
    return next((kind for kind, pattern in KIND_KEYS.items() if re.search(pattern, text)), None)


# ---------------------------------------------------------------------------------------------- metadata


def _module_rank(parts: dict[str, torch.Tensor]) -> int | None:
    for key in ("lora_down.weight", "hada_w1_b", "lokr_w2_b", "lokr_w1_b"):
        if key in parts:
            return int(parts[key].shape[0])
    return None  # LoKr with both factors full: no rank (clients apply scale 1)


def tensor_metadata(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """ss_network_module / _dim / _alpha / _args as kohya and LyCORIS write them, read off the file's tensors.

    dim and alpha are the most common values over the non-conv modules (per-layer ranks after a resize or an import
    keep their own values in the tensors); conv_dim / conv_alpha likewise over the 3x3 convs.
    """
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, part = key.partition(".")
        modules.setdefault(name, {})[part] = value
    parts = {p for m in modules.values() for p in m}
    if parts == {"diff"}:  # weight differences (OFT's kohya file): no rank or alpha, LyCORIS' algo "full"
        return {"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps({"algo": "full"})}
    conv = {n: m for n, m in modules.items() if n.endswith(CONV3)}
    rest = {n: m for n, m in modules.items() if n not in conv} or conv

    def dims(group: dict) -> tuple[int | None, float | None]:
        ranks = [r for r in (_module_rank(m) for m in group.values()) if r is not None]
        alphas = [float(m["alpha"]) for m in group.values() if "alpha" in m]
        rank = Counter(ranks).most_common(1)[0][0] if ranks else None
        alpha = Counter(alphas).most_common(1)[0][0] if alphas else None
        if rank is None and alpha is not None:  # all-full LoKr: scale 1, shown as dim = alpha
            rank = int(alpha)
        return rank, alpha

    rank, alpha = dims(rest)
    algo = "loha" if "hada_w1_a" in parts else "lokr" if parts & {"lokr_w1", "lokr_w1_a"} else "lora"
    if algo == "lora" and conv and any(m.get("lora_down.weight", torch.empty(0)).ndim == 4 for m in conv.values()):
        algo = "locon"
    meta = {"ss_network_dim": str(rank), "ss_network_alpha": str(alpha)}
    if algo == "lora" and "dora_scale" not in parts:
        return {**meta, "ss_network_module": "networks.lora"}
    args = {"algo": "locon" if algo == "lora" else algo}
    if conv:
        conv_rank, conv_alpha = dims(conv)
        args.update(conv_dim=str(conv_rank), conv_alpha=str(conv_alpha))
    if "dora_scale" in parts:
        args["dora_wd"] = "True"
    return {**meta, "ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps(args)}
