"""SDXL's conditioning, as its training step needs it: both text towers and the size/crop time ids.

The same maths as ``StableDiffusionXLPipeline.encode_prompt`` / ``_get_add_time_ids`` (tests compare them), but on
token ids already in the batch and with per-sample sizes, which the pipeline's prompt-level API does not take.
The training step uses them through sdft/models/conditioning.py.
"""

from __future__ import annotations

from collections.abc import Sequence

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
