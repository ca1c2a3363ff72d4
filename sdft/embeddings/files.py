"""Embedding files: A1111/ComfyUI, diffusers, and the embedding bundled in a kohya LoRA.

- A1111 / ComfyUI: `<name>.safetensors` holding `emb_params` [n_vectors, dim]; put it in `embeddings/` and write its
  name (the file stem) in the prompt. diffusers loads it too: `load_textual_inversion(path, token=name)`.
- diffusers: `learned_embeds.safetensors` holding `{token: [n_vectors, dim]}` (what diffusers' textual_inversion
  example writes); `load_textual_inversion(path)` adds `<sks>`, `<sks>_1`, ... and expands `<sks>` in prompts.
- kohya bundle (pivotal tuning): the LoRA file also holds `bundle_emb.<name>.string_to_param.*` [n_vectors, dim], which
  A1111's built-in Lora extension (networks.py) loads as the embedding `<name>` along with the LoRA. ComfyUI's LoRA
  loader does not read `bundle_emb.*` ("lora key not loaded"): ComfyUI takes the separate `<name>.safetensors`, which
  every pivotal run writes beside the bundle (`usage_lines` says so at the end of a run).
- SDXL (both text towers): every file holds `clip_l` [n, 768] (first tower) and `clip_g` [n, 1280] (second tower),
  the SDXL embedding format of A1111 and ComfyUI (diffusers: `load_textual_inversion(sd["clip_l"], token=...,
  text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)`, the same with `clip_g` and the second pair); the
  diffusers-named `learned_embeds.safetensors` holds the same two keys and names its token in `sdft_token`. Bundled in
  a kohya SDXL LoRA: `bundle_emb.<name>.clip_l` / `bundle_emb.<name>.clip_g` (A1111's networks.py hands the
  `bundle_emb.<name>.*` tensors to its embedding reader, which reads the SDXL keys).
An SDXL embedding is passed around as {"clip_l": tensor, "clip_g": tensor}; an SD 1.x one as a tensor.
"""

from __future__ import annotations

import os
from pathlib import Path

import safetensors.torch
import torch
from safetensors import safe_open

from sdft.adapters.lora_file import open_safetensors
from sdft.atomic import atomic_path
from sdft.embeddings.tokens import file_stem
from sdft.errors import SdftError

DIFFUSERS_NAME = "learned_embeds.safetensors"
A1111_KEY = "emb_params"
BUNDLE_PREFIX = "bundle_emb."
BUNDLE_SUFFIX = ".string_to_param.*"


SDXL_KEYS = ("clip_l", "clip_g")  # first tower (CLIP ViT-L), second tower (OpenCLIP bigG)


class EmbeddingFormatError(SdftError):
    """A file is not an embedding sdft can read."""


def embedding_tensors(vectors, key: str = A1111_KEY) -> dict[str, torch.Tensor]:
    """An SD 1.x embedding (tensor) as {key: tensor}; an SDXL one ({"clip_l", "clip_g"}) as it is."""
    if isinstance(vectors, dict):
        return {k: vectors[k].detach().float().cpu().contiguous() for k in SDXL_KEYS}
    return {key: vectors.detach().float().cpu().contiguous()}


def _write(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
    """safetensors file written to a temp name and renamed (nothing half-written)."""
    with atomic_path(path) as tmp:
        safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return path


def a1111_path(folder: str | os.PathLike, token: str, kohya_file: str | os.PathLike | None = None) -> Path:
    """The A1111/ComfyUI embedding file in `folder`: `<name>.safetensors`, or `<name>_embedding.safetensors` when the
    LoRA file written beside it has that name (a run named like its token, e.g. name=sks with <sks>: the embedding
    must not overwrite the LoRA; the prompt word is then the file's stem)."""
    path = Path(folder) / f"{file_stem(token)}.safetensors"
    if kohya_file is not None and path.resolve() == Path(kohya_file).resolve():
        path = path.with_name(f"{file_stem(token)}_embedding.safetensors")
    return path


def save_embedding_files(
    token: str,
    vectors: torch.Tensor,
    folder: str | os.PathLike,
    init_word: str = "",
    metadata: dict[str, str] | None = None,
    kohya_file: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Write both files into `folder`: {"diffusers": learned_embeds.safetensors, "a1111": <name>.safetensors}.
    `vectors`: a tensor [n, dim] (SD 1.x) or {"clip_l", "clip_g"} (SDXL: both files hold the two keys)."""
    folder = Path(folder)
    first = vectors["clip_l"] if isinstance(vectors, dict) else vectors
    meta = {
        "sdft_token": token,
        "sdft_num_vectors": str(first.shape[0]),
        "sdft_init_word": init_word,
        **(metadata or {}),
    }
    return {
        "diffusers": _write(embedding_tensors(vectors, token), folder / DIFFUSERS_NAME, meta),
        "a1111": _write(embedding_tensors(vectors), a1111_path(folder, token, kohya_file), meta),
    }


def bundle_tensors(token: str, vectors, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The `bundle_emb.*` tensors that put an embedding into a kohya LoRA file (named like its A1111 file):
    `bundle_emb.<name>.string_to_param.*` (SD 1.x), `bundle_emb.<name>.clip_l` / `.clip_g` (SDXL)."""
    name = f"{BUNDLE_PREFIX}{file_stem(token)}"
    if isinstance(vectors, dict):
        return {f"{name}.{k}": vectors[k].detach().to("cpu", dtype).contiguous() for k in SDXL_KEYS}
    return {f"{name}{BUNDLE_SUFFIX}": vectors.detach().to("cpu", dtype).contiguous()}


def add_bundle(kohya_path: str | os.PathLike, token: str, vectors) -> Path:
    """Rewrite a kohya LoRA file with the embedding bundled (same metadata, fresh sshs_* hashes), atomically."""
    from sdft.adapters.kohya import write_kohya_file

    with safe_open(str(kohya_path), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    dtype = next(iter(tensors.values())).dtype if tensors else torch.float32
    tensors.update(bundle_tensors(token, vectors, dtype))
    return write_kohya_file(tensors, kohya_path, {**metadata, "sdft_embedding_token": token})


def split_bundle(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """(the LoRA tensors, {embedding name: [n, dim] or {"clip_l", "clip_g"}}) of a kohya state dict that may bundle
    embeddings (SD 1.x or SDXL keys)."""
    lora = {k: v for k, v in state_dict.items() if not k.startswith(BUNDLE_PREFIX)}
    embeddings: dict = {}
    for key, value in state_dict.items():
        if key.startswith(BUNDLE_PREFIX):
            name, _, part = key[len(BUNDLE_PREFIX) :].partition(".")
            if part == BUNDLE_SUFFIX.lstrip("."):
                embeddings[name] = value
            elif part in SDXL_KEYS:
                embeddings.setdefault(name, {})[part] = value
            else:
                raise EmbeddingFormatError(
                    f"{key}: a bundled embedding must be bundle_emb.<name>{BUNDLE_SUFFIX} (SD 1.x) or "
                    "bundle_emb.<name>.clip_l / .clip_g (SDXL)"
                )
    for name, value in embeddings.items():
        if isinstance(value, dict) and set(value) != set(SDXL_KEYS):
            raise EmbeddingFormatError(f"bundle_emb.{name}: an SDXL embedding needs both clip_l and clip_g")
    return lora, embeddings


def load_embedding_file(path: str | os.PathLike) -> tuple[str, torch.Tensor | dict[str, torch.Tensor]]:
    """(the token to write in prompts, vectors [n, dim] or SDXL's {"clip_l", "clip_g"}) of an A1111/ComfyUI or
    diffusers embedding file.

    A1111 files are named by their stem (what A1111 prompts write); diffusers files by their only key; SDXL files
    by their stem (sdft's learned_embeds.safetensors: by its `sdft_token`).
    """
    path = Path(path)
    if path.is_dir():
        path = path / DIFFUSERS_NAME
    if path.suffix != ".safetensors" or not path.is_file():
        raise EmbeddingFormatError(
            f"{path}: not an embedding .safetensors file (A1111 <name>.safetensors or "
            f"diffusers {DIFFUSERS_NAME}); .pt/.bin embeddings are pickles and not read."
        )
    fix = f"Use an embedding file a training run wrote (embedding/<name>.safetensors or {DIFFUSERS_NAME})."
    with open_safetensors(path, "embedding", fix, EmbeddingFormatError) as f:
        state, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise EmbeddingFormatError(
            f"embedding {path}: {bad[0]} holds NaN/inf values (training diverged); use an earlier run's embedding "
            "or retrain with a lower lr."
        )
    if set(SDXL_KEYS) <= set(state):
        token = metadata.get("sdft_token") if path.name == DIFFUSERS_NAME else None
        vectors = {k: state[k].unsqueeze(0) if state[k].dim() == 1 else state[k] for k in SDXL_KEYS}
        if any(v.dim() != 2 for v in vectors.values()) or vectors["clip_l"].shape[0] != vectors["clip_g"].shape[0]:
            raise EmbeddingFormatError(
                f"{path}: clip_l {tuple(vectors['clip_l'].shape)} and clip_g {tuple(vectors['clip_g'].shape)} must "
                "be [vectors, dim] with the same number of vectors."
            )
        return token or path.stem, vectors
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


def usage_lines(
    token: str, folder: str | os.PathLike, kohya_file: str | os.PathLike | None = None, sdxl: bool = False
) -> list[str]:
    """How each client uses a run's embedding files in `folder` (and the LoRA file bundling it): the run's last lines."""
    folder, stem = Path(folder), file_stem(token)
    a1111 = a1111_path(folder, token, kohya_file)
    bundle = ""
    if kohya_file is not None:
        bundle = (
            f" (or the LoRA {kohya_file} alone, which bundles it: write {stem} and <lora:{Path(kohya_file).stem}:1>)"
        )
    diffusers = (
        f"load_textual_inversion(sd['clip_l'], token='{token}', text_encoder=pipe.text_encoder, "
        "tokenizer=pipe.tokenizer) and the same with clip_g, text_encoder_2, tokenizer_2, sd = "
        f"load_file('{folder / DIFFUSERS_NAME}')"
        if sdxl
        else f"pipe.load_textual_inversion('{folder / DIFFUSERS_NAME}')"
    )
    return [
        f"Embedding {token} for A1111: put {a1111} in embeddings/ and write {a1111.stem} in the prompt" + bundle + ".",
        f"Embedding {token} for ComfyUI: put {a1111} in models/embeddings and write embedding:{a1111.stem} in the prompt"
        + (" (ComfyUI does not read the embedding bundled in the LoRA file)" if kohya_file else "")
        + ".",
        f"Embedding {token} for diffusers: {diffusers}; write {token} in the prompt.",
    ]


def save_trained(vectors, folder: str | os.PathLike, kohya_file: str | os.PathLike | None = None) -> dict[str, Path]:
    """A run's embedding (`TokenVectors`) into `folder` (both files), and bundled into `kohya_file` when given."""
    trained = vectors.trained()
    if vectors.trained_2() is not None:  # SDXL: both towers' vectors
        trained = {"clip_l": trained, "clip_g": vectors.trained_2()}
    if not all(torch.isfinite(t).all() for t in embedding_tensors(trained).values()):
        raise FloatingPointError(f"The embedding {vectors.token} is not finite; not overwriting anything at {folder}.")
    files = save_embedding_files(vectors.token, trained, folder, vectors.init_word, kohya_file=kohya_file)
    if kohya_file is not None:
        files["kohya_bundle"] = add_bundle(kohya_file, vectors.token, trained)
    return files
