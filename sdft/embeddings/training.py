"""Training the embedding: its vectors, spliced into the text encoder's token embedding, and the run wiring.

Only the new tokens' vectors are trained, and they are a parameter of their own ([n, dim], fp32), not rows of the
text encoder's token table: a forward hook on the token embedding puts them in place of the new tokens' rows. Neither
of the two usual ways (the diffusers textual_inversion example restores the other rows after every optimizer step;
others mask their gradient) is needed, because the other rows are never given to the optimizer: they stay bitwise
unchanged by construction (with a mask, AdamW's weight decay would still move them), the optimizer holds state for n
vectors instead of the whole 49408-row table (~450 MB for SD 1.5 in fp32), and a fp16/bf16 text encoder works. The
table's new rows are kept equal to the vectors (`sync`) so whatever reads the table sees the trained embedding.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn

from sdft.config import AdapterKind
from sdft.embeddings.tokens import add_tokens, expand_prompt, token_names
from sdft.errors import ConfigError

log = logging.getLogger(__name__)
HOOK_ATTR = "_sdft_token_vectors"  # the text encoder's attribute holding its TokenVectors (one embedding per model)


class TokenVectors(nn.Module):
    """The trained vectors of one token (`vectors`, [n, dim]); `frozen` detaches them (pivotal tuning's second part).

    SDXL: the token is in both towers, each with its own vectors (`vectors_2`, [n, dim_2], ids `ids_2` in the second
    tokenizer), as A1111 / ComfyUI SDXL embeddings hold `clip_l` and `clip_g`."""

    def __init__(self, token: str, init_word: str, towers: list[tuple[list[int], torch.Tensor]]):
        """`towers`: (token ids, starting vectors) in each text tower, in the towers' order (one or two)."""
        super().__init__()
        if not 1 <= len(towers) <= 2:
            raise ValueError(f"an embedding spans one or two text towers, not {len(towers)}")
        (ids, start), *second = towers
        self.token, self.ids, self.init_word = token, list(ids), init_word
        self.vectors = nn.Parameter(start.detach().float().clone())
        self.ids_2 = self.vectors_2 = None  # attribute names kept: they are the checkpoints' state-dict keys
        if second:  # SDXL's second tower
            ids_2, start_2 = second[0]
            self.ids_2, self.vectors_2 = list(ids_2), nn.Parameter(start_2.detach().float().clone())
        self.frozen = False

    @property
    def tokens(self) -> list[str]:
        return token_names(self.token, len(self.ids))

    def set_trainable(self, on: bool) -> None:
        for param in self.parameters():
            param.requires_grad_(on)

    def splice(self, input_ids: torch.Tensor, embeds: torch.Tensor, tower: int = 1) -> torch.Tensor:
        """`embeds` with the new tokens' rows replaced by the vectors (of `tower` 1 or 2); no host sync."""
        ids, vectors = (self.ids, self.vectors) if tower == 1 else (self.ids_2, self.vectors_2)
        first, n = ids[0], len(ids)
        mask = (input_ids >= first) & (input_ids < first + n)
        vectors = vectors.detach() if self.frozen else vectors
        picked = vectors.to(embeds.dtype)[(input_ids - first).clamp(0, n - 1)]
        return torch.where(mask.unsqueeze(-1), picked, embeds)

    @torch.no_grad()
    def sync(self, text_encoder: nn.Module, text_encoder_2: nn.Module | None = None) -> None:
        """Copy the vectors into the towers' token tables (for anything that reads the tables directly)."""
        for model, ids, vectors in (
            (text_encoder, self.ids, self.vectors),
            (text_encoder_2, self.ids_2, self.vectors_2),
        ):
            if model is not None and vectors is not None:
                table = model.get_input_embeddings().weight
                table[ids] = vectors.to(table.dtype)

    def trained(self) -> torch.Tensor:
        return self.vectors.detach().float().cpu().clone()

    def trained_2(self) -> torch.Tensor | None:
        return None if self.vectors_2 is None else self.vectors_2.detach().float().cpu().clone()


def _attach(text_encoder: nn.Module, vectors: TokenVectors, tower: int = 1) -> None:
    def hook(module, args, output):
        return vectors.splice(args[0], output, tower)

    handle = text_encoder.get_input_embeddings().register_forward_hook(hook)
    setattr(vectors, "handle" if tower == 1 else "handle_2", handle)
    text_encoder.__dict__[HOOK_ATTR] = vectors  # not a submodule: the text encoder's parameters stay its own


def init_word_of(cfg: DictConfig) -> str:
    """adapter.embedding.init_word, else the class prompt's last word."""
    emb = cfg.adapter.embedding
    if emb.init_word:
        return emb.init_word
    words = (cfg.data.class_prompt or "").split()
    if not words:
        raise ConfigError(
            "adapter.embedding.init_word is not set and there is no data.class_prompt to take it from: "
            "set adapter.embedding.init_word=<a word close to the subject>, e.g. dog."
        )
    return words[-1]


def check_embedding_config(cfg: DictConfig) -> None:
    """Config checks for embeddings, before any work."""
    emb, kind = cfg.adapter.embedding, cfg.adapter.kind
    if kind == AdapterKind.embedding and not emb.placeholder:
        raise ConfigError(
            "adapter.kind=embedding trains a new token's embedding: set adapter.embedding.placeholder, "
            "e.g. adapter.embedding.placeholder='<sks>', and write it in the captions."
        )
    if not emb.placeholder:
        return
    if kind == AdapterKind.full:
        raise ConfigError(
            "adapter.embedding.placeholder with adapter.kind=full is not supported: train the embedding with "
            "kind=embedding (textual inversion) or with a LoRA (kind=lora: pivotal tuning)."
        )
    if any(c.isspace() for c in emb.placeholder):
        raise ConfigError(f"adapter.embedding.placeholder={emb.placeholder!r}: one word without spaces, e.g. <sks>.")
    # num_vectors and train_fraction: their ranges are declared in sdft/config.py (checked by sdft/run/checks.py)
    if kind == AdapterKind.embedding and emb.train_fraction < 1.0:
        raise ConfigError(
            "adapter.embedding.train_fraction < 1 freezes the embedding, but with adapter.kind=embedding "
            "nothing else trains: use it for pivotal tuning (kind=lora) or leave it at 1."
        )
    if cfg.data.cache_text_encoder_outputs:
        raise ConfigError(
            "data.cache_text_encoder_outputs cannot be used while an embedding trains (adapter.embedding"
            ".placeholder): the text encoder's outputs change every step. Set data.cache_text_encoder_outputs="
            "false (latents can still be cached: data.cache_latents=true)."
        )
    prompts = [cfg.data.instance_prompt, *(c.instance_prompt for c in cfg.data.concepts)]
    if not any(p and emb.placeholder in p for p in prompts) and not cfg.data.use_captions:
        raise ConfigError(
            f"adapter.embedding.placeholder={emb.placeholder!r} is in no instance prompt, so it would never be "
            f"trained: write it there, e.g. data.instance_prompt='a {emb.placeholder} dog'."
        )


def attach_embedding(cfg: DictConfig, towers: list[tuple[object, nn.Module]]) -> TokenVectors | None:
    """The phase's trained embedding, or None. The first phase naming a token adds it; a later phase naming the same
    token trains it on; an embedding from an earlier phase stays in the prompt vocabulary, frozen, otherwise.
    `towers`: (tokenizer, text encoder) of each text tower (`FamilyParts.text_towers`); the token is added to every
    one, each with its own vectors (SDXL: both)."""
    emb = cfg.adapter.embedding
    existing: TokenVectors | None = getattr(towers[0][1], HOOK_ATTR, None)
    if existing is not None and existing.token != emb.placeholder:
        existing.set_trainable(False)
        existing.frozen = True
    if not emb.placeholder:
        return None
    if existing is not None and existing.token == emb.placeholder:
        if len(existing.ids) != emb.num_vectors:
            raise ConfigError(
                f"adapter.embedding.num_vectors={emb.num_vectors}, but {emb.placeholder} already has "
                f"{len(existing.ids)} vectors from an earlier phase."
            )
        existing.set_trainable(True)
        existing.frozen = False
        return existing
    if existing is not None:
        raise ConfigError(
            f"one embedding per run: {existing.token} was trained in an earlier phase; {emb.placeholder} "
            "cannot be added too."
        )
    word = init_word_of(cfg)
    take = emb.take_over_word
    added = []
    for tokenizer, text_encoder in towers:
        ids = add_tokens(tokenizer, text_encoder, emb.placeholder, emb.num_vectors, word, take)
        added.append((ids, text_encoder.get_input_embeddings().weight[ids]))
    vectors = TokenVectors(emb.placeholder, word, added)
    for tower, (_, text_encoder) in enumerate(towers, 1):
        _attach(text_encoder, vectors, tower)
    log.info(
        "Embedding %s: %d vector(s) (tokens %s) start from %r", emb.placeholder, len(added[0][0]), vectors.tokens, word
    )
    return vectors


class PromptTokenizer:
    """The tokenizer with the embedding's token expanded to its n vector tokens in every prompt (training data)."""

    def __init__(self, tokenizer, vectors: TokenVectors):
        self.tokenizer, self.vectors = tokenizer, vectors

    def __call__(self, text, *args, **kwargs):
        n = len(self.vectors.ids)
        texts = [expand_prompt(t, self.vectors.token, n) for t in ([text] if isinstance(text, str) else text)]
        return self.tokenizer(texts[0] if isinstance(text, str) else texts, *args, **kwargs)

    def __getattr__(self, name):  # only called for names not found here (guarded for pickling to data workers)
        if name.startswith("__") or name in ("tokenizer", "vectors"):
            raise AttributeError(name)
        return getattr(self.tokenizer, name)


def prompt_tokenizer(tokenizer, vectors: TokenVectors | None):
    return tokenizer if vectors is None or len(vectors.ids) == 1 else PromptTokenizer(tokenizer, vectors)


def expand_prompts(prompts: list[str], vectors: TokenVectors | None) -> list[str]:
    if vectors is None:
        return prompts
    return [expand_prompt(p, vectors.token, len(vectors.ids)) for p in prompts]


class EmbeddingSchedule(L.Callback):
    """Freezes the embedding from step `freeze_at` on (pivotal tuning); keeps the token table in step with it."""

    def __init__(
        self,
        vectors: TokenVectors,
        text_encoder: nn.Module,
        freeze_at: int | None,
        text_encoder_2: nn.Module | None = None,
    ):
        self.vectors, self.text_encoder, self.freeze_at = vectors, text_encoder, freeze_at
        self.text_encoder_2 = text_encoder_2

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        frozen = self.freeze_at is not None and trainer.global_step >= self.freeze_at
        if frozen and not self.vectors.frozen:
            log.info("Embedding %s frozen at step %d; the LoRA trains on.", self.vectors.token, trainer.global_step)
        self.vectors.frozen = frozen  # from the step count: a resumed run freezes at the same step

    def on_train_end(self, trainer, module) -> None:
        self.vectors.sync(self.text_encoder, self.text_encoder_2)


def freeze_step(cfg: DictConfig) -> int | None:
    """The step from which the embedding stops training (None: never)."""
    fraction = cfg.adapter.embedding.train_fraction
    return None if fraction >= 1.0 else max(int(round(fraction * cfg.trainer.max_steps)), 1)
