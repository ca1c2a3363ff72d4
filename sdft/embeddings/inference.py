"""Embeddings in a generation pipeline (`sdft generate`, `sdft ui`): loaded through diffusers' `load_textual_inversion`,
from embedding files, from a kohya LoRA's bundle, or from beside a run's LoRA; each one reports the token to write."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from sdft.embeddings.files import DIFFUSERS_NAME, load_embedding_file
from sdft.errors import ConfigError

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
        towers = [("clip_l", self.pipe.text_encoder, self.pipe.tokenizer)]
        if getattr(self.pipe, "text_encoder_2", None) is not None:  # SDXL
            towers.append(("clip_g", self.pipe.text_encoder_2, self.pipe.tokenizer_2))
        if isinstance(vectors, dict) != (len(towers) == 2):
            raise ConfigError(
                f"embedding {token!r} from {source} is an "
                f"{'SDXL (clip_l + clip_g)' if isinstance(vectors, dict) else 'SD 1.x (one tensor)'} embedding, "
                f"this base is {'SDXL' if len(towers) == 2 else 'SD 1.x'}: use it with a base of its family."
            )
        if token in self.pipe.tokenizer.get_vocab():
            raise ConfigError(
                f"embedding {token!r} from {source}: {token!r} is already a token of this model's "
                "tokenizer; rename the file (A1111 names an embedding by its file name)."
            )
        parts = vectors if isinstance(vectors, dict) else {"clip_l": vectors}
        for key, model, _ in towers:
            width = model.get_input_embeddings().weight.shape[1]
            if parts[key].shape[-1] != width:
                raise ConfigError(
                    f"embedding {token!r} from {source} has width {parts[key].shape[-1]} ({key}), this model's "
                    f"text encoder {width}: it was trained for another base (SD 1.x is 768; SDXL 768 + 1280)."
                )
        if len(towers) == 1:
            self.pipe.load_textual_inversion(vectors, token=token)
        else:
            for key, model, tokenizer in towers:
                self.pipe.load_textual_inversion(parts[key], token=token, text_encoder=model, tokenizer=tokenizer)
        self.sources[token] = source
        log.info(
            "Loaded embedding %s (%d vector(s)) from %s: write %s in the prompt",
            token,
            len(parts["clip_l"]),
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
