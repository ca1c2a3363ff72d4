"""Prompt tokens of a trained embedding: names, prompt expansion, and adding them to a tokenizer / text encoder.

A multi-vector embedding `<sks>` of n vectors uses the tokens `<sks>`, `<sks>_1`, ..., `<sks>_{n-1}`, as diffusers'
`load_textual_inversion` names them; a prompt writes `<sks>` once and it is expanded to all n tokens (diffusers'
pipelines do that in `maybe_convert_prompt`; training does it with `expand_prompt`).
"""

from __future__ import annotations

import logging
import re

import torch
from torch import nn

from sdft.errors import ConfigError

log = logging.getLogger(__name__)


def token_names(token: str, num_vectors: int) -> list[str]:
    """`<sks>`, `<sks>_1`, ... : one tokenizer token per vector."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def expand_prompt(prompt: str, token: str, num_vectors: int) -> str:
    """Write every `token` of the prompt as its n vector tokens (no-op for one vector).

    Hand-written: diffusers' `maybe_convert_prompt` is a pipeline method that reads the tokenizer's added tokens;
    the training data has no pipeline. Tokens already expanded (`<sks>_1`) are left alone.
    """
    if num_vectors <= 1:
        return prompt
    return re.sub(re.escape(token) + r"(?!_\d)", " ".join(token_names(token, num_vectors)), prompt)


def collapse_prompt(prompt: str, tokens) -> str:
    """The inverse of `expand_prompt` for each of `tokens` (`<sks> <sks>_1` -> `<sks>`), for prompts handed to a
    diffusers pipeline, whose `maybe_convert_prompt` expands them again (an already expanded prompt would become
    `<sks> <sks>_1 <sks> <sks>_1_1`)."""
    for token in tokens:
        expanded = re.escape(token) + r"(?: " + re.escape(token) + r"_\d+)+(?!\d)"
        prompt = re.sub(expanded, lambda _: token, prompt)
    return prompt


def file_stem(token: str) -> str:
    """The A1111/ComfyUI embedding's file name (what A1111 prompts write): the token without <> and odd characters."""
    stem = re.sub(r"[^\w.-]", "_", token.strip("<>")).strip("_.")
    return stem or "embedding"


def word_embedding(tokenizer, text_encoder: nn.Module, word: str) -> torch.Tensor:
    """The input embedding of `word`, fp32. CLIP's byte-level BPE never reads a word as "unknown": a word it does not
    know splits into pieces, and the start is the mean of their embeddings, with a warning naming them."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if not ids:
        raise ConfigError(f"adapter.embedding.init_word={word!r} tokenizes to nothing: give a plain word, e.g. dog.")
    pieces = tokenizer.convert_ids_to_tokens(ids)
    if len(ids) > 1:
        log.warning(
            "adapter.embedding.init_word=%r is not one token of the vocabulary: the embedding starts from the mean of "
            "its pieces %s. A single-token word close to the subject (e.g. dog) is a better start.",
            word,
            pieces,
        )
    table = text_encoder.get_input_embeddings().weight
    return table[torch.tensor(ids, device=table.device)].detach().float().mean(dim=0)


def add_tokens(
    tokenizer, text_encoder: nn.Module, token: str, num_vectors: int, init_word: str, take_over_word: bool = False
) -> list[int]:
    """Add the embedding's tokens to the tokenizer, grow the text encoder's token table, start the new rows at
    `init_word`'s embedding. Returns the token ids (consecutive). Existing rows are copied unchanged by transformers.

    A token already in the vocabulary is refused, and so is a placeholder that is a word of it (`dog` is the token
    `dog</w>`: the new token would replace the word in every prompt) unless `take_over_word`."""
    names = token_names(token, num_vectors)
    vocab = tokenizer.get_vocab()
    taken = [n for n in names if n in vocab]
    if taken:
        raise ConfigError(
            f"adapter.embedding.placeholder={token!r}: {taken} is already a token of this tokenizer. Pick a new token, "
            "e.g. <my-subject> (angle brackets keep it apart from real words)."
        )
    pieces = tokenizer.tokenize(token)
    if len(pieces) == 1 and pieces[0] in vocab and pieces[0] != tokenizer.unk_token and not take_over_word:
        raise ConfigError(
            f"adapter.embedding.placeholder={token!r} is already a word of this tokenizer (the token {pieces[0]!r}): "
            f"the embedding would replace it in every prompt (the class prompt's too, and in A1111/ComfyUI through "
            f"its file {file_stem(token)}.safetensors). Pick a new token, e.g. <{token}-subject>; to take over a rare "
            "word on purpose (DreamBooth's sks), set adapter.embedding.take_over_word=true."
        )
    start = word_embedding(tokenizer, text_encoder, init_word)
    tokenizer.add_tokens(names)
    ids = tokenizer.convert_tokens_to_ids(names)
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        table = text_encoder.get_input_embeddings().weight
        table[ids] = start.to(table.dtype).expand(len(ids), -1)
    if ids != list(range(ids[0], ids[0] + len(ids))):
        raise ConfigError(f"the tokenizer gave the new tokens {names} non-consecutive ids {ids}.")
    return ids
