"""Import a LoRA file (kohya / A1111 / ComfyUI or diffusers format, ours or third-party) as a trainable peft adapter.

The file is first checked to fit the models (`check_lora_fits`: every key must land on a layer of the right shape,
else one error lists what does not fit). Each module keeps the file's own rank and alpha (peft `rank_pattern` /
`alpha_pattern` where they differ between modules), so the imported model computes exactly what the file means;
training then continues from those weights, and `save_lora` / `save_kohya_lora` write them back out.
"""

from __future__ import annotations

import logging
import os
from collections import Counter

import torch
from peft import LoraConfig
from peft.utils import set_peft_model_state_dict
from torch import nn

from sdft.adapters.imported import ImportedLora, file_kind_of, lora_layers
from sdft.adapters.kohya import PEFT_KEY, Alphas, LoraFormatError, load_kohya_lora
from sdft.adapters.lora import ADAPTER_NAME, has_lora

log = logging.getLogger(__name__)


def _lora_config(sd: dict[str, torch.Tensor], alphas: Alphas, kind: str, dropout: float) -> LoraConfig:
    ranks = {}
    for key, value in sd.items():
        match = PEFT_KEY.fullmatch(key)
        if match and match["part"] == "A":
            ranks[match["module"]] = int(value.shape[0])
    module_alphas = {m: alphas.get(f"{kind}.{m}", float(r)) for m, r in ranks.items()}
    rank = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(module_alphas.values()).most_common(1)[0][0]
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=sorted(ranks),  # full module names: exact matches only
        rank_pattern={m: r for m, r in ranks.items() if r != rank},
        alpha_pattern={m: a for m, a in module_alphas.items() if a != alpha},
        init_lora_weights=True,
    )


def _inject(model: nn.Module, sd: dict[str, torch.Tensor], config: LoraConfig, trainable: bool, kind: str) -> None:
    if has_lora(model) and ADAPTER_NAME in model.peft_config:
        raise LoraFormatError(
            f"The {kind} already has a LoRA adapter named {ADAPTER_NAME!r}; import a LoRA file into a fresh model "
            "(or merge the first one with `sdft export`)."
        )
    model.requires_grad_(False)
    model.add_adapter(config, adapter_name=ADAPTER_NAME)
    device = next(model.parameters()).device
    state = {k: v.to(device=device, dtype=torch.float32) for k, v in sd.items()}
    result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER_NAME)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in getattr(result, "missing_keys", []) or [] if ".lora_" in k]
    if unexpected or missing:
        raise LoraFormatError(
            f"{kind}: LoRA tensors did not load into the injected layers: unexpected {unexpected[:5]}, "
            f"missing {missing[:5]}"
        )
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()  # trained params stay fp32 whatever the frozen weights are
            param.requires_grad_(trainable)


def load_lora_into(
    unet: nn.Module | None,
    text_encoder: nn.Module | None,
    path: str | os.PathLike,
    *,
    train_unet: bool = True,
    train_text_encoder: bool = True,
    dropout: float = 0.0,
    text_encoder_2: nn.Module | None = None,
) -> ImportedLora:
    """Inject the LoRA in `path` into `unet` / `text_encoder` as peft adapter "default", with the file's ranks and
    alphas, so the models compute what the file means and training can continue from it. With SDXL's
    `text_encoder_2`, the file is an SDXL LoRA (sdft/adapters/sdxl_load.py).

    Every tensor must fit (else `LoraFormatError` lists the keys that do not). The LoRA parameters of a model
    require grad when its `train_*` flag is true (only they do: the base weights are frozen); parts the file
    has no tensors for get no adapter. Returns a summary of what was injected.
    """
    if text_encoder_2 is not None:
        from sdft.adapters.sdxl_load import load_sdxl_lora_into

        return load_sdxl_lora_into(
            unet,
            text_encoder,
            text_encoder_2,
            path,
            train_unet=train_unet,
            train_text_encoder=train_text_encoder,
            dropout=dropout,
        )
    kind = file_kind_of(path)
    if kind is not None:  # LoHa / LoKr / DoRA / OFT: rebuilt with their own peft config
        return _load_other_kind(unet, text_encoder, path, kind, train_unet, train_text_encoder)
    unet_sd, te_sd, alphas = load_kohya_lora(path, unet, text_encoder)
    if not unet_sd and not te_sd:
        raise LoraFormatError(f"{path}: no LoRA tensors for the U-Net or the text encoder.")
    summary = ImportedLora()
    for kind, model, sd, trainable in (
        ("unet", unet, unet_sd, train_unet),
        ("text_encoder", text_encoder, te_sd, train_text_encoder),
    ):
        if not sd:
            continue
        config = _lora_config(sd, alphas, kind, dropout)
        _inject(model, sd, config, trainable, kind)
        summary.record(kind, lora_layers(model), path)
    return summary


def _load_other_kind(unet, text_encoder, path, kind: str, train_unet: bool, train_text_encoder: bool) -> ImportedLora:
    """A LoHa / LoKr / DoRA / OFT file (sdft/diffusers or kohya format) as the trainable adapter "default"."""
    from sdft.adapters.lora_file import read_lora_file
    from sdft.adapters.peft_files import inject, parse_file

    state, metadata = read_lora_file(path)
    models = {"unet": unet, "text_encoder": text_encoder}
    summary = ImportedLora()
    for part, (config, sd) in parse_file(state, metadata, kind, models).items():
        if models[part] is None:
            raise LoraFormatError(f"{path}: the file has tensors for the {part} but no {part} was given")
        if has_lora(models[part]) and ADAPTER_NAME in models[part].peft_config:
            raise LoraFormatError(
                f"The {part} already has an adapter named {ADAPTER_NAME!r}; import into a fresh model."
            )
        trainable = train_unet if part == "unet" else train_text_encoder
        summary.modules[part] = inject(models[part], config, sd, ADAPTER_NAME, trainable, f"{path} ({part})")
        log.info("Imported a %s adapter on %d modules of the %s from %s", kind, summary.modules[part], part, path)
    return summary
