"""Sampling the toy base and measuring prompt control: do generations show every attribute the prompt names?"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

from sdft.toy.detector import detect
from sdft.toy.world import RESOLUTION, Scene, random_scene

SAMPLE_STEPS = 20
GUIDANCE = 3.0


def control_scenes(n: int, seed: int = 0) -> list[Scene]:
    """`n` random world scenes (every attribute drawn at random, seeded): what prompt control is measured on."""
    rng = random.Random(seed)
    return [random_scene(rng) for _ in range(n)]


@torch.no_grad()
def sample(
    pipe, prompts: list[str], seed: int = 0, steps: int = SAMPLE_STEPS, guidance: float = GUIDANCE, batch_size: int = 32
) -> list[Image.Image]:
    """One 32 px image per prompt; image i uses the generator seeded with seed + i (batch-size independent)."""
    pipe.set_progress_bar_config(disable=True)
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        gens = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        out = pipe(
            prompt=chunk,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=RESOLUTION,
            width=RESOLUTION,
            generator=gens,
            output_type="pil",
        )
        images += out.images
    return images


def prompt_control_rate(pipe, n: int = 48, seed: int = 0, **kwargs) -> tuple[float, list[dict]]:
    """Share of `n` generations from full captions that show every captioned attribute (class, both colours,
    pattern, background), and the per-image rows (`ok`, plus one `<attribute>_ok` each)."""
    scenes = control_scenes(n, seed)
    images = sample(pipe, [s.caption() for s in scenes], seed=seed, **kwargs)
    rows = []
    for scene, image in zip(scenes, images):
        found = detect(image).attributes()
        row = {"prompt": scene.caption(), **{f"{a}_ok": found[a] == getattr(scene, a) for a in found}}
        row["ok"] = all(row[f"{a}_ok"] for a in found)
        rows.append(row)
    return float(np.mean([r["ok"] for r in rows])), rows


def attribute_rates(rows: list[dict]) -> dict[str, float]:
    """Per-attribute share of generations that show the prompted value (from prompt_control_rate's rows)."""
    keys = [k for k in rows[0] if k.endswith("_ok")]
    return {k[:-3]: float(np.mean([r[k] for r in rows])) for k in keys}


def grid(images: list[Image.Image], cols: int, scale: int = 3) -> Image.Image:
    """Images in rows of `cols`, enlarged `scale` times (nearest neighbour, so pixels stay visible)."""
    rows = (len(images) + cols - 1) // cols
    w, h = images[0].size
    out = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, im in enumerate(images):
        out.paste(im, ((i % cols) * w, (i // cols) * h))
    return out.resize((cols * w * scale, rows * h * scale), Image.NEAREST)
