"""Sampling the toy base and measuring prompt control: do generations show the prompted colour and class?"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from PIL import Image

from sdft.toy.detector import detect
from sdft.toy.world import CLASSES, COLOURS, RESOLUTION

SAMPLE_STEPS = 20
GUIDANCE = 3.0


def control_prompts(n: int) -> list[tuple[str, str, str]]:
    """(prompt, colour, class) cycling through every class x colour (big, middle, on white or gray)."""
    combos = list(itertools.product(COLOURS, CLASSES, ("white", "gray")))
    combos = [combos[(i * 7) % len(combos)] for i in range(len(combos))]  # interleave, so small n still mixes all
    return [(f"a big {c} {k} in the middle on a {b} background", c, k) for c, k, b in itertools.islice(
        itertools.cycle(combos), n)]


@torch.no_grad()
def sample(pipe, prompts: list[str], seed: int = 0, steps: int = SAMPLE_STEPS, guidance: float = GUIDANCE,
           batch_size: int = 32) -> list[Image.Image]:
    """One 32 px image per prompt; image i uses the generator seeded with seed + i (batch-size independent)."""
    pipe.set_progress_bar_config(disable=True)
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        gens = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        out = pipe(prompt=chunk, num_inference_steps=steps, guidance_scale=guidance, height=RESOLUTION,
                   width=RESOLUTION, generator=gens, output_type="pil")
        images += out.images
    return images


def prompt_control_rate(pipe, n: int = 48, seed: int = 0, **kwargs) -> tuple[float, list[dict]]:
    """Share of `n` generations whose detected colour and class both match the prompt, and the per-image rows."""
    prompts = control_prompts(n)
    images = sample(pipe, [p for p, _, _ in prompts], seed=seed, **kwargs)
    rows = []
    for (prompt, colour, cls), image in zip(prompts, images):
        d = detect(image)
        rows.append({"prompt": prompt, "colour": d.colour, "cls": d.cls,
                     "ok": d.colour == colour and d.cls == cls})
    return float(np.mean([r["ok"] for r in rows])), rows


def grid(images: list[Image.Image], cols: int, scale: int = 3) -> Image.Image:
    """Images in rows of `cols`, enlarged `scale` times (nearest neighbour, so pixels stay visible)."""
    rows = (len(images) + cols - 1) // cols
    w, h = images[0].size
    out = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, im in enumerate(images):
        out.paste(im, ((i % cols) * w, (i // cols) * h))
    return out.resize((cols * w * scale, rows * h * scale), Image.NEAREST)
