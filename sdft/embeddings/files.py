"""Embedding files: A1111/ComfyUI, diffusers, and the embedding bundled in a kohya LoRA.

- A1111 / ComfyUI: `<name>.safetensors` holding `emb_params` [n_vectors, dim]; put it in `embeddings/` and write its
  name (the file stem) in the prompt. diffusers loads it too: `load_textual_inversion(path, token=name)`.
- diffusers: `learned_embeds.safetensors` holding `{token: [n_vectors, dim]}` (what diffusers' textual_inversion
  example writes); `load_textual_inversion(path)` adds `<sks>`, `<sks>_1`, ... and expands `<sks>` in prompts.
- kohya bundle (pivotal tuning): the LoRA file also holds `bundle_emb.<name>.string_to_param.*` [n_vectors, dim], which
  A1111's built-in Lora extension (networks.py) and ComfyUI load as the embedding `<name>` along with the LoRA.
"""

from __future__ import annotations

import os
from pathlib import Path

import safetensors.torch
import torch
from safetensors import safe_open

from sdft.atomic import atomic_path
from sdft.embeddings.tokens import file_stem
from sdft.errors import SdftError

DIFFUSERS_NAME = "learned_embeds.safetensors"
A1111_KEY = "emb_params"
BUNDLE_PREFIX = "bundle_emb."
BUNDLE_SUFFIX = ".string_to_param.*"


class EmbeddingFormatError(SdftError):
    """A file is not an embedding sdft can read."""


def _write(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
    """safetensors file written to a temp name and renamed (nothing half-written)."""
    with atomic_path(path) as tmp:
        safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return path


def save_embedding_files(
    token: str,
    vectors: torch.Tensor,
    folder: str | os.PathLike,
    init_word: str = "",
    metadata: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Write both files into `folder`: {"diffusers": learned_embeds.safetensors, "a1111": <name>.safetensors}."""
    folder = Path(folder)
    vectors = vectors.detach().float().cpu().contiguous()
    meta = {
        "sdft_token": token,
        "sdft_num_vectors": str(vectors.shape[0]),
        "sdft_init_word": init_word,
        **(metadata or {}),
    }
    return {
        "diffusers": _write({token: vectors}, folder / DIFFUSERS_NAME, meta),
        "a1111": _write({A1111_KEY: vectors}, folder / f"{file_stem(token)}.safetensors", meta),
    }


def bundle_tensors(token: str, vectors: torch.Tensor, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The `bundle_emb.*` tensors that put an embedding into a kohya LoRA file (named like its A1111 file)."""
    return {f"{BUNDLE_PREFIX}{file_stem(token)}{BUNDLE_SUFFIX}": vectors.detach().to("cpu", dtype).contiguous()}


def add_bundle(kohya_path: str | os.PathLike, token: str, vectors: torch.Tensor) -> Path:
    """Rewrite a kohya LoRA file with the embedding bundled (same metadata, fresh sshs_* hashes), atomically."""
    from sdft.adapters.kohya import write_kohya_file

    with safe_open(str(kohya_path), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    dtype = next(iter(tensors.values())).dtype if tensors else torch.float32
    tensors.update(bundle_tensors(token, vectors, dtype))
    return write_kohya_file(tensors, kohya_path, {**metadata, "sdft_embedding_token": token})


def split_bundle(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the LoRA tensors, {embedding name: [n, dim]}) of a kohya state dict that may bundle embeddings."""
    lora = {k: v for k, v in state_dict.items() if not k.startswith(BUNDLE_PREFIX)}
    embeddings = {}
    for key, value in state_dict.items():
        if key.startswith(BUNDLE_PREFIX):
            name, _, part = key[len(BUNDLE_PREFIX) :].partition(".")
            if part != BUNDLE_SUFFIX.lstrip("."):
                raise EmbeddingFormatError(f"{key}: a bundled embedding must be bundle_emb.<name>{BUNDLE_SUFFIX}")
            embeddings[name] = value
    return lora, embeddings


def load_embedding_file(path: str | os.PathLike) -> tuple[str, torch.Tensor]:
    """(the token to write in prompts, vectors [n, dim]) of an A1111/ComfyUI or diffusers embedding file.

    A1111 files are named by their stem (what A1111 prompts write); diffusers files by their only key.
    """
    path = Path(path)
    if path.is_dir():
        path = path / DIFFUSERS_NAME
    if path.suffix != ".safetensors" or not path.is_file():
        raise EmbeddingFormatError(
            f"{path}: not an embedding .safetensors file (A1111 <name>.safetensors or "
            f"diffusers {DIFFUSERS_NAME}); .pt/.bin embeddings are pickles and not read."
        )
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    if A1111_KEY in state:
        token, vectors = path.stem, state[A1111_KEY]
    elif len(state) == 1:
        token, vectors = next(iter(state.items()))
    else:
        raise EmbeddingFormatError(
            f"{path}: neither an A1111 embedding ({A1111_KEY}) nor a diffusers one (one "
            f"token: tensor); it holds {sorted(state)[:5]}."
        )
    if vectors.dim() == 1:
        vectors = vectors.unsqueeze(0)
    if vectors.dim() != 2:
        raise EmbeddingFormatError(f"{path}: the embedding has shape {tuple(vectors.shape)}; expected [vectors, dim].")
    return token, vectors


def save_trained(vectors, folder: str | os.PathLike, kohya_file: str | os.PathLike | None = None) -> dict[str, Path]:
    """A run's embedding (`TokenVectors`) into `folder` (both files), and bundled into `kohya_file` when given."""
    trained = vectors.trained()
    if not torch.isfinite(trained).all():
        raise FloatingPointError(f"The embedding {vectors.token} is not finite; not overwriting anything at {folder}.")
    files = save_embedding_files(vectors.token, trained, folder, vectors.init_word)
    if kohya_file is not None:
        files["kohya_bundle"] = add_bundle(kohya_file, vectors.token, trained)
    return files
