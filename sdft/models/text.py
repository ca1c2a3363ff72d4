"""Text-encoder states for the U-Net, with CLIP skip counted as A1111 counts it.

CLIP skip, A1111 / kohya numbering (what `model.clip_skip` means):
  1 = the last layer's output (then the final LayerNorm): the plain `text_encoder(ids)[0]`, SD's default;
  2 = the penultimate layer's hidden state, put through the final LayerNorm (what many anime/NAI-derived models
      were trained with); n = hidden_states[-n] + final LayerNorm.
diffusers' pipeline argument `clip_skip` counts the *skipped* layers: diffusers' clip_skip = A1111's - 1
(`None` for 1). `diffusers_clip_skip` does that mapping.

diffusers 0.42's pipeline applies its clip_skip through `text_encoder.text_model.final_layer_norm`, which
transformers 5's CLIPTextModel no longer has (huggingface/diffusers#14124): passing clip_skip to the pipeline
raises AttributeError there. `prompt_embeds` computes the embeddings here instead; pass them to the pipeline.
It applies clip skip to the negative prompt too, as A1111 does (diffusers' pipeline applies it to the prompt only).
"""

from __future__ import annotations

import torch
from torch import nn

from sdft.errors import ConfigError


def _final_layer_norm(text_encoder: nn.Module) -> nn.Module:
    inner = getattr(text_encoder, "text_model", text_encoder)  # transformers 4 nests the transformer, 5 does not
    return inner.final_layer_norm


def check_clip_skip(clip_skip: int, text_encoder: nn.Module | None = None) -> None:
    """Raise ConfigError unless 1 <= clip_skip <= number of text-encoder layers."""
    layers = text_encoder.config.num_hidden_layers if text_encoder is not None else None
    if not isinstance(clip_skip, int) or clip_skip < 1 or (layers is not None and clip_skip > layers):
        limit = f" and at most {layers} (the text encoder's layer count)" if layers is not None else ""
        raise ConfigError(
            f"model.clip_skip={clip_skip!r}: must be an integer >= 1{limit}. "
            "1 = last layer (SD default), 2 = penultimate (A1111's 'Clip skip: 2')."
        )


def text_states(
    text_encoder: nn.Module,
    input_ids: torch.Tensor,
    clip_skip: int = 1,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The hidden states fed to the U-Net's cross-attention, (B, tokens, width).

    clip_skip in A1111 numbering: 1 = last layer (== text_encoder(ids)[0]), 2 = penultimate layer + final
    LayerNorm, as diffusers' StableDiffusionPipeline does for its clip_skip=1. Gradients flow when enabled.
    """
    check_clip_skip(clip_skip, text_encoder)
    if clip_skip == 1:
        return text_encoder(input_ids, attention_mask=attention_mask)[0]
    out = text_encoder(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return _final_layer_norm(text_encoder)(out.hidden_states[-clip_skip])


def diffusers_clip_skip(clip_skip: int) -> int | None:
    """A1111's clip skip -> the `clip_skip` argument of diffusers pipelines (1 -> None, 2 -> 1, n -> n - 1)."""
    check_clip_skip(clip_skip)
    return None if clip_skip == 1 else clip_skip - 1


@torch.no_grad()
def prompt_embeds(
    pipe,
    prompts: list[str],
    negative_prompts: list[str] | None = None,
    clip_skip: int = 1,
) -> dict[str, torch.Tensor]:
    """`prompt_embeds=` / `negative_prompt_embeds=` for a StableDiffusionPipeline call, honouring clip_skip.

    Tokenised as the pipeline does (padded to the tokenizer's max length, truncated). The negative embeddings are
    always computed ("" when not given) so classifier-free guidance uses the same clip skip for both halves.
    Use: `pipe(prompt_embeds=..., negative_prompt_embeds=..., ...)` instead of `prompt=`/`negative_prompt=`.
    """
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    device = next(encoder.parameters()).device
    negative_prompts = negative_prompts if negative_prompts is not None else [""] * len(prompts)

    def encode(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )
        mask = None
        if getattr(encoder.config, "use_attention_mask", False):  # as the pipeline: only encoders that ask for it
            mask = tokens.attention_mask.to(device)
        return text_states(encoder, tokens.input_ids.to(device), clip_skip, mask).to(encoder.dtype)

    return {"prompt_embeds": encode(list(prompts)), "negative_prompt_embeds": encode(list(negative_prompts))}
