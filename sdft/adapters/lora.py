"""Adapter injection through peft (LoRA and the kinds of sdft/adapters/kinds.py), and what is trainable.

peft does the layers; this module only decides targets, casts trained parameters to fp32 and reports counts.
"""

from __future__ import annotations

import copy
import logging

import torch
from diffusers.training_utils import cast_training_params
from peft import inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn

from sdft.adapters.kinds import is_adapter_param, is_peft_kind, layer_adapters, peft_config
from sdft.adapters.targets import TEXT_ENCODER_TARGETS, UNET_TARGETS, resolve_targets
from sdft.config import AdapterConfig, AdapterKind
from sdft.errors import ConfigError

log = logging.getLogger(__name__)

ADAPTER_NAME = "default"


def add_lora(model: nn.Module, groups: list[str], known: dict[str, str], cfg: AdapterConfig, where: str):
    """Inject an adapter of `cfg.kind` (LoRA, LoCon, DoRA, LoHa, LoKr, OFT) on the modules named by `groups`; only
    its parameters require grad afterwards. Returns the peft config."""
    targets = resolve_targets(model, groups, known, where)
    config = peft_config(model, targets, cfg)
    model.requires_grad_(False)
    model.add_adapter(config, adapter_name=ADAPTER_NAME)
    cast_training_params(model)  # diffusers: the new adapter (all that requires grad) in fp32, whatever the base is
    return config


def setup_trainable(
    unet: nn.Module, text_encoder: nn.Module, cfg: AdapterConfig, text_encoder_2: nn.Module | None = None
) -> None:
    """Freeze everything, then make trainable what the adapter config asks for (LoRA layers or whole models).
    SDXL's `text_encoder_2` is treated like the text encoder (same target groups, train_text_encoder)."""
    towers = [t for t in (text_encoder, text_encoder_2) if t is not None]  # SDXL: both
    for model in (unet, *towers):
        model.requires_grad_(False)
    if cfg.kind == AdapterKind.embedding:
        return  # textual inversion: only the new tokens' vectors train (sdft/embeddings/training.py)
    if is_peft_kind(cfg.kind):
        if not (cfg.train_unet or cfg.train_text_encoder):
            raise ConfigError("adapter: both train_unet and train_text_encoder are false, nothing would be trained.")
        if cfg.train_unet:
            add_lora(unet, list(cfg.unet_targets), UNET_TARGETS, cfg, "adapter.unet_targets")
        for tower in towers if cfg.train_text_encoder else []:
            add_lora(tower, list(cfg.text_encoder_targets), TEXT_ENCODER_TARGETS, cfg, "adapter.text_encoder_targets")
    else:  # full DreamBooth: the models themselves are trained
        if cfg.train_unet:
            unet.float().requires_grad_(True)
        for tower in towers if cfg.train_text_encoder else []:
            tower.float().requires_grad_(True)


def has_lora(model: nn.Module) -> bool:
    return bool(getattr(model, "peft_config", None))


def trainable_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# -- phases: what happens to the previous phase's adapter ---------------------------------------------------------
# peft has no "rename", "freeze one of two active adapters" or "merge then drop" for a model that keeps training, so
# these few helpers work on peft's layer API (BaseTunerLayer) directly.


def _tuner_layers(model: nn.Module) -> list[BaseTunerLayer]:
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def adapter_names(model: nn.Module) -> list[str]:
    return list(getattr(model, "peft_config", {}) or {})


def delete_adapter(model: nn.Module, name: str) -> None:
    for layer in _tuner_layers(model):
        if name in layer_adapters(layer):
            layer.delete_adapter(name)
    model.peft_config.pop(name, None)
    if not model.peft_config:  # no adapter left: put the plain layers back, so a later one may be of another kind
        unwrap(model)


def unwrap(model: nn.Module) -> None:
    """Replace every peft layer that holds no adapter by its base layer."""
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer) and not layer_adapters(module):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())


def merge_adapter_into_base(model: nn.Module, name: str = ADAPTER_NAME) -> None:
    """Merge the adapter into the base weights with peft's own merge (additive delta, DoRA's rescale or OFT's
    rotation), then remove the adapter."""
    with torch.no_grad():
        for layer in _tuner_layers(model):
            if name in layer_adapters(layer):
                layer.merge(adapter_names=[name])
                layer.merged_adapters.remove(name)  # the base now holds it: the adapter goes, the merge stays
    delete_adapter(model, name)


def freeze_as(model: nn.Module, new_name: str) -> None:
    """Move the trained adapter to `new_name`, frozen (the slot ADAPTER_NAME is then free for a new one)."""
    config = copy.deepcopy(model.peft_config[ADAPTER_NAME])
    state = get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME)
    inject_adapter_in_model(config, model, adapter_name=new_name)
    model.peft_config[new_name] = config
    set_peft_model_state_dict(model, state, adapter_name=new_name)
    delete_adapter(model, ADAPTER_NAME)
    activate(model, adapter_names(model), trainable=[])


def activate(model: nn.Module, names: list[str], trainable: list[str]) -> None:
    """Make `names` the active adapters (their outputs add up); only `trainable` ones get gradients."""
    for layer in _tuner_layers(model):
        layer.set_adapter([n for n in names if n in layer_adapters(layer)])
    for pname, param in model.named_parameters():
        if is_adapter_param(pname):
            param.requires_grad_(any(f".{n}." in pname + "." for n in trainable))  # LoHa/LoKr: `.hada_w1_a.<n>`
    cast_training_params(model)  # trained params in fp32 (only adapters require grad here)


def check_same_kind(model: nn.Module, cfg: AdapterConfig, train: bool) -> None:
    """peft holds one adapter type per layer: a stacked adapter must be of the previous one's type."""
    old = str(model.peft_config[ADAPTER_NAME].peft_type.value)
    new = str(peft_config(model, [], cfg).peft_type.value) if train else old
    if old != new:
        raise ConfigError(
            f"phase start=stack: the previous adapter is {old}, this phase's adapter.kind="
            f"{getattr(cfg.kind, 'value', cfg.kind)} is {new}; peft cannot stack different kinds on one "
            "layer. Use the same kind, or start=merge / fresh."
        )


def start_phase(
    unet: nn.Module,
    text_encoder: nn.Module,
    cfg: AdapterConfig,
    mode: str,
    previous: str | None,
    text_encoder_2: nn.Module | None = None,
) -> None:
    """Set up the adapters for a phase. `previous` names the phase whose adapter is in the models (or None).

    fresh: drop any previous adapter, new one on the base. continue: keep training the previous adapter.
    stack: freeze the previous adapter (kept active under the previous phase's name), train a new one on top.
    merge: merge the previous adapter into the base weights, train a new one.
    SDXL's `text_encoder_2` (when given) follows the text encoder's settings.
    """
    towers = (text_encoder, text_encoder_2)  # every text tower the model has follows the text encoder's settings
    models = (
        (unet, cfg.train_unet, cfg.unet_targets, UNET_TARGETS, "adapter.unet_targets"),
        *(
            (
                tower,
                cfg.train_text_encoder,
                cfg.text_encoder_targets,
                TEXT_ENCODER_TARGETS,
                "adapter.text_encoder_targets",
            )
            for tower in towers
            if tower is not None
        ),
    )
    has_previous = previous is not None and any(ADAPTER_NAME in adapter_names(m) for m, *_ in models)
    if mode == "fresh" or not has_previous:
        for model, *_ in models:
            for name in adapter_names(model):
                delete_adapter(model, name)
        setup_trainable(unet, text_encoder, cfg, text_encoder_2)
        return
    if not is_peft_kind(cfg.kind):
        raise ConfigError(
            f"phase start={mode} needs adapters (lora, locon, dora, loha, lokr, oft); "
            f"adapter.kind={getattr(cfg.kind, 'value', cfg.kind)} phases start fresh."
        )
    for model, train, groups, known, where in models:
        if mode == "continue":
            if ADAPTER_NAME in adapter_names(model):
                activate(model, adapter_names(model), trainable=[ADAPTER_NAME] if train else [])
            elif train:
                add_lora(model, list(groups), known, cfg, where)
            continue
        if ADAPTER_NAME in adapter_names(model):
            if mode == "stack":
                check_same_kind(model, cfg, train)
                freeze_as(model, previous)
            else:  # merge
                merge_adapter_into_base(model)
        if train:
            add_lora(model, list(groups), known, cfg, where)
        activate(model, adapter_names(model), trainable=[ADAPTER_NAME] if train else [])
