"""SDXL's conditioning, as its training step needs it: both text towers and the size/crop time ids.

The same maths as ``StableDiffusionXLPipeline.encode_prompt`` / ``_get_add_time_ids`` (tests compare them), but on
token ids already in the batch and with per-sample sizes, which the pipeline's prompt-level API does not take.
The training step uses them through `SdxlConditioning` (sdft/families/sdxl.py). `PairTokenizer` gives the dataset
both tokenizers' ids in one tensor; `sample_time_ids` one sample's ids from sdft's (w, h) sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection


def sdxl_text_embeddings(
    text_encoder: CLIPTextModel,
    text_encoder_2: CLIPTextModelWithProjection,
    input_ids: torch.Tensor,
    input_ids_2: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt_embeds, pooled)``: both towers' penultimate hidden states concatenated on the feature axis, and
    the second tower's projected pooled embedding."""
    hidden_1 = text_encoder(input_ids, output_hidden_states=True).hidden_states[-2]
    out_2 = text_encoder_2(input_ids_2, output_hidden_states=True)
    return torch.cat([hidden_1, out_2.hidden_states[-2]], dim=-1), out_2.text_embeds


def sdxl_time_ids(
    original_sizes: Sequence[tuple[int, int]],
    crops_top_left: Sequence[tuple[int, int]],
    target_sizes: Sequence[tuple[int, int]],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``add_time_ids`` of shape (batch, 6): (height, width) of the original image, the crop's (top, left) and the
    (height, width) trained at, one row per sample."""
    if not len(original_sizes) == len(crops_top_left) == len(target_sizes):
        raise ValueError("sdxl_time_ids: original_sizes, crops_top_left and target_sizes need one entry per sample")
    rows = [[*o, *c, *t] for o, c, t in zip(original_sizes, crops_top_left, target_sizes)]
    return torch.tensor(rows, dtype=dtype, device=device)


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


def default_time_ids(latents: torch.Tensor, vae_factor: int = 8) -> torch.Tensor:
    """Time ids for samples whose original size and crop are not known: uncropped, original = target size."""
    h, w = latents.shape[-2] * vae_factor, latents.shape[-1] * vae_factor
    n = latents.shape[0]
    return sdxl_time_ids([(h, w)] * n, [(0, 0)] * n, [(h, w)] * n, device=latents.device)


def sample_time_ids(
    original: tuple[int, int] | None, crop: tuple[int, int], target: tuple[int, int], flipped_width: int | None = None
) -> torch.Tensor:
    """One sample's SDXL time ids (6,) from sdft's (w, h) sizes and (left, top) crop: (orig h, orig w, crop top,
    crop left, target h, target w); the crop is the one in the resized image. A flipped sample passes
    the resized image's width: its crop's left edge is then counted from the flipped image's left side."""
    ow, oh = original or target
    left = crop[0] if flipped_width is None else flipped_width - crop[0] - target[0]
    return sdxl_time_ids([(oh, ow)], [(crop[1], left)], [(target[1], target[0])])[0]
