"""Adapter kinds: which peft config each `adapter.kind` becomes (LoRA, LoCon, DoRA, LoHa, LoKr, OFT).

peft implements every layer type; this module only maps sdft's config onto the peft config, with per-module ranks
for 3x3 convs (`conv_rank` / `conv_alpha`, kohya's `conv_dim` / `conv_alpha`).
"""

from __future__ import annotations

import re

from peft import LoHaConfig, LoKrConfig, LoraConfig, OFTConfig
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from sdft.config import AdapterConfig, AdapterKind
from sdft.errors import ConfigError

PEFT_KINDS = ("lora", "locon", "dora", "loha", "lokr", "oft")  # kinds trained as peft adapters (not `full`)
# A peft adapter parameter's name holds one of these (`<module>.lora_A.default.weight`, `.hada_w1_a.default`...)
ADAPTER_PARAM = re.compile(r"\.(lora_A|lora_B|lora_magnitude_vector|hada_\w+|lokr_\w+|oft_R)\.")


def is_peft_kind(kind: AdapterKind | str) -> bool:
    """True for the kinds trained as a peft adapter (everything but full fine-tuning and embeddings)."""
    return str(getattr(kind, "value", kind)) in PEFT_KINDS


def has_kohya_format(kind: AdapterKind | str) -> bool:
    """Kinds written as a kohya/LyCORIS file too: every peft kind (OFT as `.diff` weight differences, lycoris.py)."""
    return is_peft_kind(kind)


def is_adapter_param(name: str) -> bool:
    return ADAPTER_PARAM.search(name + ".") is not None


def layer_adapters(layer: BaseTunerLayer) -> set[str]:
    """Adapter names a peft layer holds, whatever its type (lora_A, hada_w1_a, lokr_w1, oft_R...)."""
    return {name for attr in layer.adapter_layer_names for name in getattr(layer, attr, {})}


def _base(module: nn.Module) -> nn.Module:
    return module.get_base_layer() if isinstance(module, BaseTunerLayer) else module


def _conv_patterns(model: nn.Module, targets: list[str], cfg: AdapterConfig) -> tuple[dict, dict]:
    """rank/alpha patterns for the 3x3 convs among `targets` (exact names), from conv_rank / conv_alpha."""
    if cfg.conv_rank is None and cfg.conv_alpha is None:
        return {}, {}
    modules = dict(model.named_modules())
    convs = [t for t in targets if isinstance(_base(modules[t]), nn.Conv2d) and _base(modules[t]).kernel_size != (1, 1)]
    rank = cfg.conv_rank if cfg.conv_rank is not None else cfg.rank
    alpha = cfg.conv_alpha if cfg.conv_alpha is not None else rank
    return {t: rank for t in convs}, {t: alpha for t in convs}  # full names, as peft matches them


def _refuse_oft_on_kxk_convs(model: nn.Module, targets: list[str]) -> None:
    """peft 0.21's OFT forward on a kxk conv (k > 1) rotates unfolded input patches and folds them back (summing the
    overlaps), which is not the conv its merge, `sdft export` and the A1111/ComfyUI file compute: refuse it."""
    modules = dict(model.named_modules())
    convs = [t for t in targets if isinstance(_base(modules[t]), nn.Conv2d) and _base(modules[t]).kernel_size != (1, 1)]
    if convs:
        raise ConfigError(
            f"adapter.kind=oft on {len(convs)} 3x3 conv(s) (e.g. {convs[0]}): peft's OFT trains these "
            "with a forward its merged weights do not reproduce; drop `conv` from adapter.unet_targets "
            "(OFT on attention/ff/proj layers is exact)."
        )


def peft_config(model: nn.Module, targets: list[str], cfg: AdapterConfig) -> PeftConfig:
    """The peft config of `cfg.kind` over explicit module names (exact, so attn1 never catches attn2)."""
    kind = str(getattr(cfg.kind, "value", cfg.kind))
    alpha = cfg.alpha if cfg.alpha is not None else cfg.rank
    ranks, alphas = _conv_patterns(model, targets, cfg)
    if kind in ("lora", "locon", "dora"):
        return LoraConfig(
            r=cfg.rank,
            lora_alpha=alpha,
            lora_dropout=cfg.dropout,
            init_lora_weights=True,
            target_modules=targets,
            rank_pattern=ranks,
            alpha_pattern=alphas,
            use_dora=kind == "dora",
        )
    if kind == "loha":  # use_effective_conv2d=False: LyCORIS' non-Tucker layout (hada_w1_b [r, in*kh*kw])
        return LoHaConfig(
            r=cfg.rank,
            alpha=alpha,
            rank_dropout=0.0,
            module_dropout=cfg.dropout,
            target_modules=targets,
            rank_pattern=ranks,
            alpha_pattern=alphas,
            use_effective_conv2d=False,
        )
    if kind == "lokr":  # LyCORIS defaults: factor -1, w1 full, w2 low-rank when the rank is small enough
        return LoKrConfig(
            r=cfg.rank,
            alpha=alpha,
            rank_dropout=0.0,
            module_dropout=cfg.dropout,
            target_modules=targets,
            rank_pattern=ranks,
            alpha_pattern=alphas,
            use_effective_conv2d=False,
            decompose_both=False,
            decompose_factor=-1,
        )
    if kind == "oft":  # exact Cayley transform (no Neumann series), no COFT projection
        _refuse_oft_on_kxk_convs(model, targets)
        return OFTConfig(
            r=0,
            oft_block_size=cfg.oft_block_size,
            module_dropout=cfg.dropout,
            target_modules=targets,
            coft=False,
            block_share=False,
            use_cayley_neumann=False,
            init_weights=True,
        )
    raise ConfigError(f"adapter.kind={kind!r} is not a peft adapter kind; use one of {list(PEFT_KINDS)} or full.")
