"""Embeddings in a generation pipeline (`sdft generate`, `sdft ui`): loaded through diffusers' `load_textual_inversion`,
from embedding files, from a kohya LoRA's bundle, or from beside a run's LoRA; each one reports the token to write."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from sdft.embeddings.files import DIFFUSERS_NAME, SDXL_KEYS, load_embedding_file
from sdft.errors import ConfigError
from sdft.models.params import named_text_towers

log = logging.getLogger(__name__)


class PipelineEmbeddings:
    """The embeddings loaded into one pipeline: token -> where it came from. A token stays loaded once added."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.sources: dict[str, str] = {}

    def add(self, token: str, vectors: torch.Tensor | dict[str, torch.Tensor], source: str) -> str:
        """Load `vectors` as `token` (multi-vector: token, token_1, ...; the prompt writes `token`); returns it.
        SDXL: {"clip_l", "clip_g"}, each loaded into its tower with its tokenizer."""
        if token in self.sources:
            if self.sources[token] == source:
                return token
            raise ConfigError(
                f"embedding {token!r} from {source}: an embedding of that name is already loaded (from "
                f"{self.sources[token]}). Rename one of the files."
            )
        # each text tower with its key in the file (A1111 / ComfyUI: one tensor for one tower, clip_l + clip_g for two)
        towers = [
            (key, model, getattr(self.pipe, name.replace("text_encoder", "tokenizer")))
            for key, (name, model) in zip(SDXL_KEYS, named_text_towers(self.pipe))
        ]
        parts = vectors if isinstance(vectors, dict) else {SDXL_KEYS[0]: vectors}
        if len(parts) != len(towers):
            raise ConfigError(
                f"embedding {token!r} from {source} is an {_file_kind(len(parts))} embedding, this base is "
                f"{_file_kind(len(towers)).split(' (')[0]}: use it with a base of its family."
            )
        if token in self.pipe.tokenizer.get_vocab():
            raise ConfigError(
                f"embedding {token!r} from {source}: {token!r} is already a token of this model's "
                "tokenizer; rename the file (A1111 names an embedding by its file name)."
            )
        for key, model, _ in towers:
            width = model.get_input_embeddings().weight.shape[1]
            if parts[key].shape[-1] != width:
                raise ConfigError(
                    f"embedding {token!r} from {source} has width {parts[key].shape[-1]} ({key}), this model's "
                    f"text encoder {width}: it was trained for another base (SD 1.x is 768; SDXL 768 + 1280)."
                )
        for key, model, tokenizer in towers:
            self.pipe.load_textual_inversion(parts[key], token=token, text_encoder=model, tokenizer=tokenizer)
        self.sources[token] = source
        log.info(
            "Loaded embedding %s (%d vector(s)) from %s: write %s in the prompt",
            token,
            len(parts[SDXL_KEYS[0]]),
            source,
            token,
        )
        return token

    def load_file(self, path: str | Path) -> str:
        """An A1111/ComfyUI or diffusers embedding file (or a run's embedding/ folder)."""
        token, vectors = load_embedding_file(path)
        return self.add(token, vectors, str(path))

    def from_lora(self, lora_file: Path, bundled: dict[str, torch.Tensor]) -> list[str]:
        """A LoRA's embeddings: its `bundle_emb.*` tensors, else a pivotal run's learned_embeds beside it."""
        tokens = [self.add(name, vectors, f"{lora_file} (bundled)") for name, vectors in bundled.items()]
        beside = lora_file.parent / DIFFUSERS_NAME
        if not tokens and beside.is_file():
            tokens.append(self.load_file(beside))
        return tokens

    def describe(self) -> str:
        """One line per embedding: which token to write."""
        return "\n".join(f"- embedding: write `{t}` in the prompt ({s})" for t, s in self.sources.items())


def _file_kind(towers: int) -> str:
    """An embedding file's kind by how many text towers it holds vectors for (in messages)."""
    return "SDXL (clip_l + clip_g)" if towers == 2 else "SD 1.x (one tensor)"
