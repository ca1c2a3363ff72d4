"""Target presets: the one place that says which modules a named target group covers.

Names follow diffusers' SD 1.x U-Net and transformers' CLIP text encoder, which are also the names kohya/A1111 LoRA
keys are built from.
"""

from __future__ import annotations

import re
from typing import Iterable

from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from sdft.errors import ConfigError

# U-Net target groups (module-name regexes, matched against the end of the full module name)
UNET_TARGETS: dict[str, str] = {
    "attn1": r"attn1\.(to_q|to_k|to_v|to_out\.0)",  # self-attention
    "attn2": r"attn2\.(to_q|to_k|to_v|to_out\.0)",  # cross-attention (text conditioning)
    "ff": r"ff\.net\.(0\.proj|2)",  # feed-forward (GEGLU in, out)
    "proj": r"attentions\.\d+\.(proj_in|proj_out)",  # transformer in/out projections
    # ResNet 3x3 and 1x1 convs and the down/up-sampler convs: what kohya's LoCon / LyCORIS conv_dim adapts
    "conv": r"(resnets\.\d+\.(conv1|conv2|conv_shortcut)|(downsamplers|upsamplers)\.0\.conv)",
}

# Text-encoder target groups
TEXT_ENCODER_TARGETS: dict[str, str] = {
    "attn": r"self_attn\.(q_proj|k_proj|v_proj|out_proj)",
    "mlp": r"mlp\.(fc1|fc2)",
}


def check_target_names(names: Iterable[str], known: dict[str, str], where: str) -> None:
    """Fail with the list of valid names when a target group is unknown."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"{where}: unknown target group(s) {unknown}. Valid: {sorted(known)} (defined in sdft/adapters/targets.py)."
        )


def resolve_targets(model: nn.Module, groups: Iterable[str], known: dict[str, str], where: str) -> list[str]:
    """Full names of the Linear/Conv modules (or peft layers wrapping them) that the target `groups` cover."""
    groups = list(groups)
    check_target_names(groups, known, where)
    if not groups:
        return []
    pattern = re.compile(r"(^|\.)(" + "|".join(f"(?:{known[g]})" for g in groups) + r")$")
    names = [
        name
        for name, module in model.named_modules()
        if pattern.search(name) and isinstance(module, (nn.Linear, nn.Conv2d, BaseTunerLayer))  # already adapted: stack
    ]
    if not names:
        raise ConfigError(f"{where}: target groups {groups} match no layer of {type(model).__name__}.")
    return names
