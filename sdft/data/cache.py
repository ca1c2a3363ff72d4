"""Caches: VAE latent distributions per (image, bucket, crop, flip) and text-encoder outputs per caption (in memory).

A latent entry holds the VAE encoder's distribution parameters (mean and log-variance, 8 channels), not a sample:
the training step draws the sample exactly as it would from a fresh encode, so caching does not change results.
Keys: sha256 of the file's bytes, the bucket size, the crop box, the flip, the background colour and the VAE's
identity (a hash of its config and weights): change any of them and the entry is recomputed. On disk, each entry is
one safetensors file <cache_dir>/<key>.safetensors written via a temp name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sdft.atomic import atomic_path

log = logging.getLogger(__name__)

CACHE_VERSION = "1"


def default_cache_dir() -> Path:
    root = os.environ.get("SDFT_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "sdft") / "latents"


def vae_identity(vae) -> str:
    """A hash of the VAE's config and weights: different weights, different cache entries."""
    h = hashlib.sha256(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        # reshape(-1): a channels_last 1x1 conv weight is "contiguous" with a non-unit last stride, which view() refuses
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def latent_key(
    file_digest: str, size: tuple[int, int], crop: tuple[int, int], flip: bool, background: tuple[int, ...], vae_id: str
) -> str:
    text = f"v{CACHE_VERSION}|{file_digest}|{size[0]}x{size[1]}|{crop[0]},{crop[1]}|{int(flip)}|{background}|{vae_id}"
    return hashlib.sha256(text.encode()).hexdigest()


class LatentCache:
    """Memory dict of key -> latent distribution parameters, optionally backed by a folder."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder
        self.memory: dict[str, torch.Tensor] = {}
        self.hits = self.computed = 0
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def _file(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        if key in self.memory:
            return self.memory[key]
        if self.folder is not None and self._file(key).is_file():
            from safetensors.torch import load_file

            try:
                value = load_file(str(self._file(key)))["latent_dist"]
            except Exception as err:  # a damaged entry is recomputed
                log.warning("Latent cache entry %s unreadable (%s); recomputing.", self._file(key), err)
                return None
            self.memory[key] = value
            self.hits += 1
            return value
        return None

    def put(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().to("cpu", torch.float32).contiguous()
        self.memory[key] = value
        self.computed += 1
        if self.folder is not None:
            from safetensors.torch import save_file

            final = self._file(key)
            with atomic_path(final) as tmp:  # a unique temp name: several processes may write the same key
                save_file({"latent_dist": value}, str(tmp))

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __getitem__(self, key: str) -> torch.Tensor:
        value = self.get(key)
        if value is None:
            raise KeyError(f"latent cache has no entry {key}")
        return value


@torch.no_grad()
def fill_latent_cache(cache: LatentCache, jobs: dict[str, callable], vae, device, batch_size: int = 4) -> None:
    """Encode every missing job (key -> function returning a CHW pixel tensor), batched by size."""
    missing = [k for k in jobs if k not in cache]
    if not missing:
        log.info("Latent cache: all %d entries present.", len(jobs))
        return
    log.info("Latent cache: encoding %d of %d entries with the VAE on %s.", len(missing), len(jobs), device)
    pixels = {k: jobs[k]() for k in missing}
    by_shape: dict[tuple, list[str]] = {}
    for k in missing:
        by_shape.setdefault(tuple(pixels[k].shape), []).append(k)
    original = next(vae.parameters()).device
    vae.to(device)
    try:
        with tqdm(
            total=len(missing), desc="latent cache", unit="img", disable=len(missing) < batch_size or None
        ) as bar:
            for keys in by_shape.values():
                for start in range(0, len(keys), batch_size):
                    chunk = keys[start : start + batch_size]
                    batch = torch.stack([pixels[k] for k in chunk]).to(device, vae.dtype)
                    params = vae.encode(batch).latent_dist.parameters
                    for k, p in zip(chunk, params):
                        cache.put(k, p)
                    bar.update(len(chunk))
    finally:
        vae.to(original)


@torch.no_grad()
def text_cache(
    prompts: list[str], tokenize, encode, device, batch_size: int = 16
) -> dict[str, dict[str, torch.Tensor]]:
    """caption -> the family's encoded text on CPU ({name: tensor}: SD 1.x the hidden states (77, D); SDXL also the
    pooled embedding), computed with the training step's own `encode` (ids -> {name: (B, ...)})."""
    unique = sorted(set(prompts))
    out = {}
    for start in range(0, len(unique), batch_size):
        chunk = unique[start : start + batch_size]
        ids = torch.stack([tokenize(p) for p in chunk]).to(device)
        encoded = encode(ids)
        for i, p in enumerate(chunk):
            out[p] = {name: value[i].detach().to("cpu").contiguous() for name, value in encoded.items()}
    log.info("Text-encoder cache: %d captions encoded once.", len(out))
    return out
