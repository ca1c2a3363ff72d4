"""Tiny random CLIP and DINO-style ViT models, built offline from configs (for tests and `model=tiny` smoke runs).

Their scores mean nothing (random weights); they exercise exactly the code that real CLIP / DINO weights go through:
the same transformers classes, processors and tokenizer files, saved and loaded with `from_pretrained`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

TINY_FEATURES_VERSION = "v1"
IMAGE_SIZE = 32
_SEED = 4321


def _tiny_clip(directory: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from sdft.models.tokenizer_vocab import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=8,
        ),
        projection_dim=16,
    )
    CLIPModel(config).eval().save_pretrained(directory)
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _tiny_dino(directory: Path) -> None:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    ViTModel(config).eval().save_pretrained(directory)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(directory)


BUILDERS = {"clip": _tiny_clip, "dino": _tiny_dino}


def ensure_tiny_feature_model(kind: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """`<cache>/tiny-<kind>-v1` (kind: clip | dino), built on first use, written to a temp folder then renamed."""
    from sdft.models.tiny import default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"tiny-{kind}-{TINY_FEATURES_VERSION}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tiny-{kind}-", dir=root))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_SEED)
            BUILDERS[kind](tmp)
        os.rename(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
