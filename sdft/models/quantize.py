"""`model.quantize=int8|fp8|nf4`: the frozen base's Linear weights (U-Net and text encoder(s)) stored quantized while
adapters train on top (kohya's --fp8_base, OneTrainer's int8/nf4, QLoRA).

Backends, chosen by what runs with peft's LoRA layers (measured: a quantized tiny U-Net with peft LoRA layers on its
attention projections gives gradients to every LoRA weight):
- int8 / fp8: torchao's weight-only configs (`Int8WeightOnlyConfig`, `Float8WeightOnlyConfig`), the backend behind
  diffusers' `TorchAoConfig`, applied with `torchao.quantization.quantize_` to the already-loaded models (so every
  way of loading a base, single files included, is quantized the same way). They run on the CPU and on CUDA. peft
  wraps the quantized `nn.Linear` as the LoRA layer's base layer. optimum-quanto ran too, but diffusers deprecates its
  QuantoConfig (removal in diffusers 1.0), so torchao is the one used.
- nf4: bitsandbytes' 4-bit NormalFloat needs CUDA (diffusers' BitsAndBytesConfig refuses without a GPU: "No GPU found.
  A GPU is needed for quantization"); not wired here yet, so it is refused everywhere with that reason.
Trained LoRA files hold only the adapter weights, so they load on the unquantized base as usual.
"""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig

from sdft.errors import ConfigError

log = logging.getLogger(__name__)

BACKENDS = {"int8": "torchao int8 weight-only", "fp8": "torchao float8 weight-only"}


def check_quantize(cfg: DictConfig) -> None:
    """Refuse what a quantized base cannot do, before anything loads."""
    kind = getattr(cfg.model, "quantize", None)
    if kind is None:
        return
    kind = str(getattr(kind, "value", kind))
    if kind == "nf4":
        raise ConfigError(
            "model.quantize=nf4 needs bitsandbytes on a CUDA GPU, which sdft does not wire up yet; use "
            "model.quantize=int8 or fp8 (torchao: CPU and CUDA)."
        )
    adapter = str(getattr(cfg.adapter.kind, "value", cfg.adapter.kind))
    if adapter == "full":
        raise ConfigError(
            f"model.quantize={kind} stores the frozen base quantized, but adapter.kind=full trains every U-Net "
            "weight: quantize only for adapter training (lora, locon, ...), or set model.quantize=null."
        )
    if str(getattr(cfg.phase.start, "value", cfg.phase.start)) == "merge":
        raise ConfigError(
            f"model.quantize={kind}: phase {cfg.phase.name!r} starts with start=merge, which adds the previous "
            "adapter into the base weights; quantized weights cannot take it. Use start=stack, or model.quantize=null."
        )


def quantize_config(kind: str):
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    return {"int8": Int8WeightOnlyConfig, "fp8": Float8WeightOnlyConfig}[kind]()


def quantize_models(pipe, kind: str | None) -> int:
    """Quantize the Linear weights of the U-Net and text encoder(s) in place (before adapters are set up); returns
    how many layers were quantized. The VAE stays as it is (it only encodes images / decodes grids)."""
    if kind is None:
        return 0
    kind = str(getattr(kind, "value", kind))
    try:
        from torchao.quantization import quantize_
    except ImportError as err:
        raise ConfigError(
            f"model.quantize={kind} needs torchao: pip install -e '.[quantize]' (or pip install torchao)."
        ) from err
    count = 0
    for model in (pipe.unet, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if model is None:
            continue
        layers = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
        quantize_(model, quantize_config(kind))
        count += layers
    log.info("model.quantize=%s: %d Linear layers of the frozen base quantized (%s)", kind, count, BACKENDS[kind])
    return count
