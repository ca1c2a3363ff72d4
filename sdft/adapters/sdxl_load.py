"""Import an SDXL LoRA file (sdft's diffusers or kohya file, or a third-party kohya file with SDXL's original
`input_blocks` names) as the trainable peft adapter of the U-Net and both text towers (`phase.init_lora`).

Checked first with diffusers' own SDXL key conversion (`check_sdxl_lora_fits`: every tensor must land on a layer of
its shape, an SD 1.x file is named as such), then injected by diffusers' own SDXL loaders, the code
`StableDiffusionXLPipeline.load_lora_weights` runs: the imported models compute exactly what the file means in
diffusers (ranks, alphas and, for diffusers files, the adapter configs kept as metadata). Not hand-written: the key
conversion and the alpha handling are diffusers', so they stay what every SDXL client does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

from diffusers import StableDiffusionXLPipeline
from peft.tuners.lora import LoraLayer
from torch import nn

from sdft.adapters.kohya import LoraFormatError
from sdft.adapters.imported import ImportedLora, file_kind_of, lora_layers
from sdft.adapters.lora import ADAPTER_NAME, has_lora
from sdft.adapters.lora_file import read_lora_file
from sdft.adapters.sdxl_check import check_sdxl_lora_fits

log = logging.getLogger(__name__)


def load_sdxl_lora_into(
    unet: nn.Module,
    text_encoder: nn.Module,
    text_encoder_2: nn.Module,
    path: str | os.PathLike,
    *,
    train_unet: bool = True,
    train_text_encoder: bool = True,
    dropout: float = 0.0,
):
    """Inject the SDXL LoRA in `path` as peft adapter "default" into the models it has tensors for; its LoRA
    parameters are fp32 and require grad where the `train_*` flag says so (both towers follow
    `train_text_encoder`). Returns what was injected per model."""
    path = Path(path)
    kind = file_kind_of(path)
    if kind is not None:
        raise LoraFormatError(
            f"{path} is a {kind} file: phase.init_lora with an SDXL base takes LoRA files (diffusers or kohya "
            "format) only so far. Start this phase fresh, or from a LoRA file."
        )
    models = {"unet": unet, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2}
    for part, model in models.items():
        if has_lora(model) and ADAPTER_NAME in model.peft_config:
            raise LoraFormatError(
                f"The {part} already has an adapter named {ADAPTER_NAME!r}; import into a fresh model."
            )
    adapted = check_sdxl_lora_fits(read_lora_file(path)[0], SimpleNamespace(**models), str(path))
    state, alphas, metadata = StableDiffusionXLPipeline.lora_state_dict(
        str(path.parent), weight_name=path.name, unet_config=unet.config, return_lora_metadata=True
    )
    for model in models.values():
        model.requires_grad_(False)
    kwargs = {"network_alphas": alphas, "adapter_name": ADAPTER_NAME, "metadata": metadata}
    if "unet" in adapted:
        StableDiffusionXLPipeline.load_lora_into_unet(state, unet=unet, **kwargs)
    for prefix in ("text_encoder", "text_encoder_2"):
        if prefix in adapted:
            StableDiffusionXLPipeline.load_lora_into_text_encoder(
                state, text_encoder=models[prefix], prefix=prefix, **kwargs
            )
    summary = ImportedLora()
    for part in adapted:
        trainable = train_unet if part == "unet" else train_text_encoder
        layers = _trainable_layers(models[part], trainable, dropout)
        if len(layers) != len(adapted[part]):
            raise LoraFormatError(
                f"{path}: {len(adapted[part])} {part} modules in the file, but diffusers injected {len(layers)}."
            )
        summary.record(part, layers, path)
    return summary


def _trainable_layers(model: nn.Module, trainable: bool, dropout: float) -> list[LoraLayer]:
    """The model's imported LoRA layers, their parameters fp32 (trained params stay fp32 whatever the frozen weights
    are) and requiring grad when `trainable`, with this run's dropout (as an SD 1.x import has)."""
    layers = lora_layers(model)
    for layer in layers:
        layer.lora_dropout[ADAPTER_NAME] = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()
            param.requires_grad_(trainable)
    return layers
