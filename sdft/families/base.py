"""What every model family answers (`Family`), and what the training step asks of a family's conditioning.

One LightningModule step (sdft/training/module.py) for every family; it asks its conditioning object for the U-Net's
`encoder_hidden_states` and `added_cond_kwargs` (SD 1.x / SD 2.x: the text encoder's hidden states; SDXL: both towers,
the pooled embedding and the time ids: sdft/families/sdxl.py).

The text part is either token ids or the family's *encoded text*: a dict of tensors (`encode`), which is also what
the text-encoder cache holds per caption and what a cached batch carries under the same keys (`keys`). Callers encode
once with `encode` (the fixed-noise loss, the cache) and pass the result wherever ids are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from sdft.config import ModelFamily
from sdft.models.params import count_params, text_towers  # noqa: F401  (families' callers ask it here too)

Text = torch.Tensor | dict[str, torch.Tensor]  # token ids, or the family's encoded text (`Conditioning.encode`)
Part = tuple[str, Callable[[dict], dict], nn.Module]  # (original-layout prefix, key conversion, model)


class Conditioning:
    """What all families share: the batch's text (cached encoded text, else ids) and encoding on demand."""

    family: ModelFamily
    keys: tuple[str, ...]  # the encoded text's tensors: cache entries and cached batches hold these keys

    def encode(self, module, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encoded(self, module, text: Text) -> dict[str, torch.Tensor]:
        """`text` encoded: token ids go through the text encoder(s), encoded text is returned as it is."""
        return text if isinstance(text, dict) else self.encode(module, text)

    def placeholder_ids(self, n: int) -> torch.Tensor:
        """Token ids shaped as a batch of `n` carries them (plan's fake batches): (n, 77)."""
        return torch.zeros(n, 77, dtype=torch.long)

    def placeholder_extras(self, n: int, height: int, width: int) -> dict[str, torch.Tensor]:
        """The batch's added per-sample conditioning for `n` images of `height` x `width` (none here)."""
        return {}

    def batch_text(self, batch: dict) -> Text:
        """The batch's encoded text when the text cache filled it, else its token ids."""
        if self.keys[0] in batch:
            return {k: batch[k] for k in self.keys}
        return batch["input_ids"]


@dataclass
class FamilyParts:
    """A loaded pipeline's family-specific training parts (`Family.parts`), asked once per phase by run/train.py."""

    family: ModelFamily
    tokenizer: object  # what the dataset tokenizes captions with; None: the pipeline's own (with any trained token)
    conditioning: Conditioning
    text_encoder_2: object = None
    tokenizer_2: object = None
    time_ids: bool = False  # batches carry per-sample size/crop time ids (SDXL)

    def text_towers(self, pipe) -> list[tuple[object, nn.Module]]:
        """(tokenizer, text encoder) of each text tower, in order: the pipeline's, then a second tower's (SDXL)."""
        second = [] if self.text_encoder_2 is None else [(self.tokenizer_2, self.text_encoder_2)]
        return [(pipe.tokenizer, pipe.text_encoder), *second]

    def param_counts(self) -> dict:
        """{"text_encoder_2": {"trainable", "total"}} for a second text tower (the run summary's counts), else {}."""
        if self.text_encoder_2 is None:
            return {}
        trainable, total = count_params(self.text_encoder_2)
        return {"text_encoder_2": {"trainable": trainable, "total": total}}

    @property
    def trains_text_encoder_2(self) -> bool:
        return self.text_encoder_2 is not None and any(p.requires_grad for p in self.text_encoder_2.parameters())


class Family:
    """One model family: every question whose answer differs between SD 1.x, SD 2.x and SDXL. Subclasses set the
    class attributes and override what differs (sdft/families/sd1.py, sd2.py, sdxl.py; docs/families.md)."""

    name: ModelFamily
    label: str  # in messages: "SD 1.x", "SD 2.x", "SDXL"
    hub_id: str  # the default architecture of a single file (model.config left unset)
    tiny_model: str  # model.path of the family's offline tiny model
    native_resolution: int  # the full-size base's own training size (a loaded model's: data/buckets.py)
    vae_example: str  # a VAE to name in messages
    config_example: str  # what model.config may name for this family's fine-tunes
    layout: str  # the single-file key prefixes, for messages
    kohya_version: str  # kohya's ss_base_model_version
    kohya_prefixes: str  # the kohya file's key prefixes, for messages
    text_parts: tuple[str, ...] = ("text_encoder",)  # the adapter file's text parts (kohya prefixes: adapters/)
    # the pipeline takes prompts as written and encodes them itself (SDXL: both towers, clip skip 1); False: callers
    # hand it prompt embeddings (sdft.models.text.prompt_embeds: clip skip and long prompts as A1111 does)
    pipeline_encodes_prompts: bool = False

    def native_size_of(self, path: str) -> int:
        """The native size a base of this family named `path` most likely has, before it is loaded (the doctor's
        guess; a run takes the loaded model's)."""
        return self.native_resolution

    # -- which family --------------------------------------------------------------------------------------------
    def matches_unet(self, unet_config) -> bool:
        raise NotImplementedError

    def matches_keys(self, keys: list[str]) -> bool:
        raise NotImplementedError

    # -- loading -------------------------------------------------------------------------------------------------
    def pipeline_class(self) -> type:
        raise NotImplementedError

    def load_kwargs(self) -> dict:
        """Keyword arguments of the pipeline class's from_pretrained / from_single_file."""
        raise NotImplementedError

    def ensure_tiny(self, cache_dir: str | None):
        """The offline tiny model's diffusers folder (built on first use)."""
        raise NotImplementedError

    def build_tiny(self):
        """The offline tiny model's pipeline in memory (identical weights on every call)."""
        raise NotImplementedError

    def check_config(self, cfg) -> None:
        """Options the family does not support yet: one clear error each, before any training."""

    # -- training ------------------------------------------------------------------------------------------------
    def conditioning(self) -> Conditioning:
        raise NotImplementedError

    def parts(self, pipe, cfg) -> FamilyParts:
        """The family's training parts for a loaded pipeline (options it refuses are refused here)."""
        self.check_config(cfg)
        return FamilyParts(self.name, None, self.conditioning())

    # -- pipelines -----------------------------------------------------------------------------------------------
    def module_pipeline(self, module, tokenizer, tokenizer_2, scheduler):
        """The module's current weights as the family's pipeline (shares modules, copies nothing)."""
        raise NotImplementedError

    def img2img(self, pipe):
        """The family's img2img pipeline over `pipe`'s components (no reload; LoRAs shared)."""
        raise NotImplementedError

    # -- files ---------------------------------------------------------------------------------------------------
    def original_text_parts(self, pipe) -> list[Part]:
        """The text towers' original-layout prefixes and key conversions (single-file export)."""
        raise NotImplementedError

    def kohya_names(self, part: str, modules, unet_config=None) -> dict[str, str]:
        """Our module names of `part` (unet, text_encoder, text_encoder_2) -> their kohya / A1111 LoRA names
        (without the .lora_down / .alpha suffix); the U-Net's config where the names follow the original layout."""
        raise NotImplementedError

    def kohya_read_names(self, part: str, modules, unet_config=None) -> dict[str, str]:
        """kohya name -> our module name for every name a file of this family may use (older names included)."""
        raise NotImplementedError

    def kohya_metadata(self, scheduler_config: Any = None) -> dict[str, str]:
        """The family's `ss_*` fields of a kohya file (what A1111 / ComfyUI read to tell SD 1 / SD 2 / SDXL apart)."""
        return {"ss_base_model_version": self.kohya_version, "ss_v2": "False"}

    # -- plan ----------------------------------------------------------------------------------------------------
    preset: str  # plan's name for the full-size base architecture from the shipped configs (sd15, sd21, sdxl)

    def arch_models(self, device: str) -> dict[str, nn.Module]:
        """The full-size architecture's U-Net, VAE and text tower(s) from the shipped configs, on `device`."""
        raise NotImplementedError
