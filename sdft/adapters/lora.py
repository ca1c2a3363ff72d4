"""LoRA injection through peft, and what is trainable.

peft does the LoRA layers; this module only decides targets, casts trained parameters to fp32 and reports counts.
"""

from __future__ import annotations

import logging

import torch
from peft import LoraConfig
from torch import nn

from sdft.adapters.targets import TEXT_ENCODER_TARGETS, UNET_TARGETS, resolve_targets
from sdft.config import AdapterConfig, AdapterKind
from sdft.errors import ConfigError

log = logging.getLogger(__name__)

ADAPTER_NAME = "default"


def lora_config(targets: list[str], cfg: AdapterConfig) -> LoraConfig:
    """A peft LoraConfig over explicit module names (exact, so attn1 never catches attn2)."""
    alpha = cfg.alpha if cfg.alpha is not None else cfg.rank
    return LoraConfig(
        r=cfg.rank, lora_alpha=alpha, lora_dropout=cfg.dropout, init_lora_weights=True, target_modules=targets
    )


def add_lora(model: nn.Module, groups: list[str], known: dict[str, str], cfg: AdapterConfig, where: str) -> LoraConfig:
    """Inject a LoRA adapter on the modules named by `groups`; only its parameters require grad afterwards."""
    targets = resolve_targets(model, groups, known, where)
    config = lora_config(targets, cfg)
    model.requires_grad_(False)
    model.add_adapter(config, adapter_name=ADAPTER_NAME)
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()  # trained params stay fp32 whatever the frozen weights are
    return config


def setup_trainable(unet: nn.Module, text_encoder: nn.Module, cfg: AdapterConfig) -> None:
    """Freeze everything, then make trainable what the adapter config asks for (LoRA layers or whole models)."""
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    if cfg.kind == AdapterKind.lora:
        if not (cfg.train_unet or cfg.train_text_encoder):
            raise ConfigError("adapter: both train_unet and train_text_encoder are false, nothing would be trained.")
        if cfg.train_unet:
            add_lora(unet, list(cfg.unet_targets), UNET_TARGETS, cfg, "adapter.unet_targets")
        if cfg.train_text_encoder:
            add_lora(text_encoder, list(cfg.text_encoder_targets), TEXT_ENCODER_TARGETS, cfg, "adapter.text_encoder_targets")
    else:  # full DreamBooth: the models themselves are trained
        if cfg.train_unet:
            unet.float().requires_grad_(True)
        if cfg.train_text_encoder:
            text_encoder.float().requires_grad_(True)


def has_lora(model: nn.Module) -> bool:
    return bool(getattr(model, "peft_config", None))


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def trainable_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
