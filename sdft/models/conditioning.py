"""The family-specific part of the training step: what the U-Net is conditioned on.

One LightningModule step (sdft/training/module.py) for every family; it asks its conditioning object for the U-Net's
`encoder_hidden_states` and `added_cond_kwargs`:
  SD 1.x: the text encoder's hidden states (clip skip as set), no added conditioning;
  SDXL:   both towers' penultimate hidden states concatenated, the second tower's pooled embedding and the
          per-sample `add_time_ids` (original size, crop top-left, target size; sdft/models/sdxl_conditioning.py).
SDXL batches carry both tokenizers' ids as `input_ids` (B, 2, 77) (`PairTokenizer`) and `time_ids` (B, 6).

The text part is either token ids or the family's *encoded text*: a dict of tensors (`encode`), which is also what
the text-encoder cache holds per caption and what a cached batch carries under the same keys (`keys`): SD 1.x
`encoder_hidden_states`; SDXL `encoder_hidden_states` and the pooled `text_embeds`. Callers encode once with
`encode` (the fixed-noise loss, the cache) and pass the result wherever ids are accepted; none inspects shapes.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from sdft.config import ModelFamily
from sdft.models.sdxl_conditioning import sdxl_text_embeddings, sdxl_time_ids

Text = torch.Tensor | dict[str, torch.Tensor]  # token ids, or the family's encoded text (`Conditioning.encode`)


class Conditioning:
    """What both families share: the batch's text (cached encoded text, else ids) and encoding on demand."""

    family: ModelFamily
    keys: tuple[str, ...]  # the encoded text's tensors: cache entries and cached batches hold these keys

    def encode(self, module, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encoded(self, module, text: Text) -> dict[str, torch.Tensor]:
        """`text` encoded: token ids go through the text encoder(s), encoded text is returned as it is."""
        return text if isinstance(text, dict) else self.encode(module, text)

    def batch_text(self, batch: dict) -> Text:
        """The batch's encoded text when the text cache filled it, else its token ids."""
        if self.keys[0] in batch:
            return {k: batch[k] for k in self.keys}
        return batch["input_ids"]


class Sd1Conditioning(Conditioning):
    """SD 1.x: text-encoder hidden states (or cached ones), nothing added."""

    family = ModelFamily.sd1
    keys = ("encoder_hidden_states",)

    def encode(self, module, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"encoder_hidden_states": module.encode_text(input_ids)}

    def unet_inputs(
        self, module, text: Text, latents: torch.Tensor, time_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict | None]:
        return self.encoded(module, text)["encoder_hidden_states"], None


def default_time_ids(latents: torch.Tensor, vae_factor: int = 8) -> torch.Tensor:
    """Time ids for samples whose original size and crop are not known: uncropped, original = target size."""
    h, w = latents.shape[-2] * vae_factor, latents.shape[-1] * vae_factor
    n = latents.shape[0]
    return sdxl_time_ids([(h, w)] * n, [(0, 0)] * n, [(h, w)] * n, device=latents.device)


class SdxlConditioning(Conditioning):
    """SDXL: both text towers (module.text_encoder, module.text_encoder_2) and the size/crop time ids."""

    family = ModelFamily.sdxl
    keys = ("encoder_hidden_states", "text_embeds")

    def encode(self, module, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pair ids (B, 2, 77) -> both towers' penultimate states (B, 77, D1 + D2) and the pooled embedding."""
        with torch.set_grad_enabled(module.train_text_encoder and torch.is_grad_enabled()):
            embeds, pooled = sdxl_text_embeddings(
                module.text_encoder, module.text_encoder_2, input_ids[:, 0], input_ids[:, 1]
            )
        return {"encoder_hidden_states": embeds, "text_embeds": pooled}

    def unet_inputs(
        self, module, text: Text, latents: torch.Tensor, time_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict]:
        states = self.encoded(module, text)
        if time_ids is None:  # e.g. the base-prediction prior or the fixed-noise loss: no per-sample sizes there
            time_ids = default_time_ids(latents)
        added = {"text_embeds": states["text_embeds"], "time_ids": time_ids.to(latents.device)}
        return states["encoder_hidden_states"], added


def conditioning_for(family: ModelFamily) -> Conditioning:
    return SdxlConditioning() if ModelFamily(family) == ModelFamily.sdxl else Sd1Conditioning()


class PairTokenizer:
    """Both SDXL tokenizers behind one tokenizer call: `.input_ids` is (N, 2, max_length), so the dataset, which
    stacks one id tensor per sample, carries both without knowing about SDXL."""

    def __init__(self, tokenizer, tokenizer_2):
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.model_max_length = tokenizer.model_max_length

    def __call__(self, prompt, **kwargs) -> SimpleNamespace:
        kwargs = {**kwargs, "return_tensors": "pt"}
        ids = [tok(prompt, **kwargs).input_ids for tok in (self.tokenizer, self.tokenizer_2)]
        return SimpleNamespace(input_ids=torch.stack(ids, dim=1))


def sample_time_ids(
    original: tuple[int, int] | None, crop: tuple[int, int], target: tuple[int, int], flipped_width: int | None = None
) -> torch.Tensor:
    """One sample's SDXL time ids (6,) from sdft's (w, h) sizes and (left, top) crop: (orig h, orig w, crop top,
    crop left, target h, target w); the crop is the one in the resized image. A flipped sample passes
    the resized image's width: its crop's left edge is then counted from the flipped image's left side."""
    ow, oh = original or target
    left = crop[0] if flipped_width is None else flipped_width - crop[0] - target[0]
    return sdxl_time_ids([(oh, ow)], [(crop[1], left)], [(target[1], target[0])])[0]
