"""Optimizers from config (`optim.optimizer`: any class via Hydra's `_target_` + `_partial_`), the parameter groups of
LoRA+ and per-block U-Net learning rates, and schedule-free optimizers' train/eval switch. docs/techniques.md."""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Iterable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sdft.config import OptimConfig
from sdft.errors import ConfigError

# import name -> pip package, for the error when an optimizer's package is missing (pip install 'sdft[optimizers]')
PIP_PACKAGES = {
    "prodigyopt": "prodigyopt",
    "lion_pytorch": "lion-pytorch",
    "schedulefree": "schedulefree",
    "came_pytorch": "came-pytorch",
    "bitsandbytes": "bitsandbytes",
    "transformers": "transformers",
}


def optimizer_class(node) -> type:
    """The class `optim.optimizer._target_` names, checked to take every argument the node gives; else a ConfigError
    (naming the pip package when the class's package is missing)."""
    node = OmegaConf.to_container(node) if isinstance(node, DictConfig) else dict(node)
    target = node.get("_target_")
    if not target or "." not in target:
        raise ConfigError(f"optim.optimizer needs `_target_: package.module.Class` (got {target!r}); see conf/optim/.")
    if not node.get("_partial_"):
        raise ConfigError("optim.optimizer needs `_partial_: true` (the parameters are passed when training starts).")
    module_name, _, name = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        top = module_name.split(".")[0]
        pip = PIP_PACKAGES.get(top, top)
        raise ConfigError(
            f"optim.optimizer._target_={target} needs the {pip} package: pip install {pip} "
            f"(all optional optimizers: pip install 'sdft[optimizers]')."
        ) from err
    cls = getattr(module, name, None)
    if cls is None:
        raise ConfigError(f"optim.optimizer._target_={target}: {module_name} has no {name!r}.")
    check_arguments(cls, target, node)
    return cls


def check_arguments(cls: type, target: str, node: dict) -> None:
    """Every argument of the node is one the class takes (a dict override merges into the preset's node, so another
    class's leftovers, e.g. AdamW's betas under SGD, would otherwise fail only when training starts)."""
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in node if not k.startswith("_") and k not in params]
    if unknown:
        raise ConfigError(
            f"optim.optimizer: {target} takes no {unknown} (it takes {[k for k in params if k != 'params']}). A "
            "dict override merges into the preset's node: pick the class's preset (conf/optim/), or give the class "
            "whole on the preset without a node: optim=custom '+optim.optimizer={_target_: ..., _partial_: true}'."
        )


def learning_rates(cfg: OptimConfig) -> dict[str, float]:
    """Each parameter group's lr, the fallback rule in one place: text_encoder_lr if set, else lr; SDXL's second tower:
    text_encoder_2_lr, else the text encoder's; embedding_lr if set, else lr."""
    text_encoder = cfg.lr if cfg.text_encoder_lr is None else cfg.text_encoder_lr
    return {
        "unet": cfg.lr,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder if cfg.text_encoder_2_lr is None else cfg.text_encoder_2_lr,
        "embedding": cfg.lr if cfg.embedding_lr is None else cfg.embedding_lr,
    }


ADAMW = "torch.optim.AdamW"
ADAMW_8BIT = "bitsandbytes.optim.AdamW8bit"
# the default optimizer (optim.optimizer unset), as conf/optim/adamw.yaml writes it
ADAMW_NODE = {
    "_target_": ADAMW,
    "_partial_": True,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "weight_decay": 1e-2,
    "fused": None,
}


def optimizer_node(cfg: OptimConfig, on_gpu: bool = False) -> dict:
    """The `_target_` + `_partial_` node to build: optim.optimizer (ADAMW_NODE when unset), with torch's AdamW on its
    fused CUDA kernel (one kernel for all parameters instead of a loop) when the parameters are on a GPU, unless the
    node's `fused` says otherwise."""
    node = OmegaConf.to_container(OmegaConf.create(cfg.optimizer or ADAMW_NODE), resolve=True)  # a copy, plain
    if node.get("_target_") == ADAMW:
        node["fused"] = (on_gpu if node.get("fused") is None else bool(node["fused"])) or None
    return node


def build_optimizer(node, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """Instantiate `optim.optimizer` (a partial) on the parameter groups; each group carries its own lr, and `lr` is
    the constructor's default (some classes require one) unless the node sets it (e.g. `lr: null` for Adafactor's
    relative step)."""
    optimizer_class(node)  # the clear error first
    partial = instantiate(node, _convert_="all")  # plain lists/dicts: checkpoints hold no OmegaConf types
    return partial(groups) if "lr" in node else partial(groups, lr=lr)


# -- parameter groups --
BLOCK = re.compile(r"^(?:unet\.)?(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)")


def block_multiplier(name: str, unet, block_lr) -> float:
    """The lr multiplier of a U-Net parameter. `block_lr.down`/`up` hold one value per diffusers block, or one per
    kohya block (SD 1.x: IN00-IN11, OUT00-OUT11; resnet/attention pair j of down block i is IN 1+i(L+1)+j, its
    downsampler IN 1+i(L+1)+L, conv_in IN00; up block i's layer j is OUT i·L'+j, its upsampler goes with the last)."""
    if name.split(".", 1)[-1].startswith("mid_block") or name.startswith("mid_block"):
        return float(block_lr.mid)
    m = BLOCK.match(name)
    if m is None:
        if re.match(r"^(?:unet\.)?conv_in\.", name) and len(block_lr.down) > len(unet.down_blocks):
            return float(block_lr.down[0])
        return 1.0
    side, i, kind, j = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
    values = list(block_lr.down if side == "down" else block_lr.up)
    if not values:
        return 1.0
    blocks = unet.down_blocks if side == "down" else unet.up_blocks
    if len(values) == len(blocks):
        return float(values[i])
    if side == "down":
        layers = len(blocks[0].resnets)
        index = 1 + i * (layers + 1) + (layers if kind == "downsamplers" else j)
    else:
        layers = len(blocks[0].resnets)
        index = i * layers + (layers - 1 if kind == "upsamplers" else j)
    return float(values[index])


def check_block_lr(unet, block_lr) -> None:
    """Each list holds one value per diffusers block or per kohya block (else a ConfigError)."""
    for side, blocks in (("down", unet.down_blocks), ("up", unet.up_blocks)):
        values = list(getattr(block_lr, side))
        layers = len(blocks[0].resnets)
        fine = len(blocks) * (layers + 1) if side == "down" else len(blocks) * layers
        if values and len(values) not in (len(blocks), fine):
            raise ConfigError(
                f"optim.unet_block_lr.{side} has {len(values)} values; this U-Net needs {len(blocks)} "
                f"(one per {side} block) or {fine} (one per kohya block, as sd-scripts' "
                f"{side}_lr_weight)."
            )


def is_lora_b(name: str) -> bool:
    """LoRA's B ("up") matrices: peft's lora_B, kohya's lora_up."""
    return ".lora_B." in name or ".lora_up." in name


def split_groups(
    groups: list[dict], named: Iterable[tuple[str, torch.nn.Parameter]], unet, cfg: OptimConfig
) -> list[dict]:
    """Split the "unet" and "text_encoder" groups by LoRA+ (lr × loraplus_ratio for the B matrices, Hayou et al.
    2024) and per-block U-Net lr; other groups pass unchanged. Without either option the groups are returned as is."""
    block_lr = cfg.unet_block_lr
    use_blocks = bool(block_lr.down or block_lr.up or block_lr.mid != 1.0)
    if not cfg.loraplus_ratio and not use_blocks:
        return groups
    if use_blocks:
        check_block_lr(unet, block_lr)
    names = {id(p): n for n, p in named}
    out = []
    for group in groups:
        if group.get("name") not in ("unet", "text_encoder"):
            out.append(group)
            continue
        split: dict[tuple, list] = {}
        for p in group["params"]:
            name = names[id(p)]
            mult = block_multiplier(name, unet, block_lr) if use_blocks and group["name"] == "unet" else 1.0
            if cfg.loraplus_ratio and is_lora_b(name):
                key = (mult * cfg.loraplus_ratio, f"{group['name']}{block_tag(name, use_blocks)}_lora_B")
            else:
                key = (mult, f"{group['name']}{block_tag(name, use_blocks)}")
            split.setdefault(key, []).append(p)
        for (mult, name), params in split.items():
            out.append({**group, "params": params, "lr": group["lr"] * mult, "name": name})
    return out


def block_tag(name: str, use_blocks: bool) -> str:
    """ "/down.1", "/mid", "/up.3" for U-Net block groups (the lr monitor's names); "" without per-block lr."""
    if not use_blocks:
        return ""
    m = BLOCK.match(name)
    if m:
        return f"/{m.group(1)}.{m.group(2)}"
    return "/mid" if "mid_block" in name else ""


# -- schedule-free optimizers (Defazio et al. 2024): train mode for steps, eval mode for saving and sampling --
def set_mode(optimizer, train: bool) -> None:
    """Call `.train()` / `.eval()` on optimizers that have them (schedulefree); nothing on others."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # Lightning's LightningOptimizer wraps the real one
    method = getattr(optimizer, "train" if train else "eval", None)
    if callable(method) and callable(getattr(optimizer, "eval" if train else "train", None)):
        method()
