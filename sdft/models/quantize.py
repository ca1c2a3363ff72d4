"""`model.quantize=int8|fp8|nf4`: the frozen base's Linear weights (U-Net and text encoder(s)) stored quantized while
adapters train on top (kohya's --fp8_base, OneTrainer's int8/nf4, QLoRA).

Backends, chosen by what runs with peft's LoRA layers (measured: a quantized tiny U-Net with peft LoRA layers on its
attention projections gives gradients to every lora_B weight, with both candidates below):
- int8 / fp8: optimum-quanto's weight quantization (`quantize(model, weights=qint8|qfloat8)` then `freeze`), the backend
  behind diffusers' QuantoConfig, applied to the already-loaded models (so every way of loading a base, single files
  included, is quantized the same way). It runs on the CPU and on CUDA; its `QLinear` is an `nn.Linear`, which peft
  wraps as the LoRA layer's base layer. torchao ran too, but once installed transformers imports it in every process
  (about 5 s and several error lines per `import peft` here), and optimum-quanto is imported only when asked for.
- nf4: bitsandbytes' 4-bit NormalFloat needs CUDA (diffusers' BitsAndBytesConfig refuses without a GPU: "No GPU found.
  A GPU is needed for quantization"); not wired here yet, so it is refused everywhere with that reason.
Trained LoRA files hold only the adapter weights, so they load on the unquantized base as usual.
"""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig

from sdft.errors import ConfigError
from sdft.models.params import text_towers

log = logging.getLogger(__name__)

BACKENDS = {"int8": "optimum-quanto qint8 weights", "fp8": "optimum-quanto qfloat8 (e4m3) weights"}


def check_quantize(cfg: DictConfig) -> None:
    """Refuse what a quantized base cannot do, before anything loads."""
    kind = getattr(cfg.model, "quantize", None)
    if kind is None:
        return
    kind = str(getattr(kind, "value", kind))
    if kind == "nf4":
        raise ConfigError(
            "model.quantize=nf4 needs bitsandbytes on a CUDA GPU, which sdft does not wire up yet; use "
            "model.quantize=int8 or fp8 (optimum-quanto: CPU and CUDA)."
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


def quantize_models(pipe, kind: str | None) -> int:
    """Quantize the Linear weights of the U-Net and text encoder(s) in place (before adapters are set up); returns
    how many layers were quantized. The VAE stays as it is (it only encodes images / decodes grids)."""
    if kind is None:
        return 0
    kind = str(getattr(kind, "value", kind))
    try:
        from optimum.quanto import freeze, qfloat8, qint8, quantize
    except ImportError as err:
        raise ConfigError(
            f"model.quantize={kind} needs optimum-quanto: pip install -e '.[quantize]' (or pip install optimum-quanto)."
        ) from err
    count = 0
    for model in (pipe.unet, *text_towers(pipe)):
        count += sum(isinstance(m, torch.nn.Linear) for m in model.modules())
        quantize(model, weights={"int8": qint8, "fp8": qfloat8}[kind])
        freeze(model)  # the quantized weights replace the float ones (else both stay in memory)
        contiguous_inputs(model)
    log.info("model.quantize=%s: %d Linear layers of the frozen base quantized (%s)", kind, count, BACKENDS[kind])
    return count


def _contiguous(module, args):
    return (args[0].contiguous(), *args[1:]) if args and isinstance(args[0], torch.Tensor) else None


def contiguous_inputs(model: torch.nn.Module) -> None:
    """Hand quantized Linear layers inputs contiguous in the last dimension. optimum-quanto's CPU int8 kernel
    (`torch._weight_int8pack_mm`, taken for bf16 activations) refuses anything else, and the linear projections of
    SDXL's and SD 2.x's transformer blocks get a permuted view (`proj_in` after NCHW -> NHWC): without this, an
    int8 run on a bf16 base stops at its first step ("A must be contiguous on the last dimension")."""
    from optimum.quanto.nn import QModuleMixin

    for module in model.modules():
        if isinstance(module, QModuleMixin) and isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(_contiguous)
