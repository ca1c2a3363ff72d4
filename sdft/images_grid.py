"""Labelled image grids: rows = prompts (or sweep values), columns = seeds; used by validation grids, `sdft
generate` sweeps and `sdft eval` reports. Hand-written: a few PIL calls (torchvision's make_grid has no labels)."""

from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont


LABEL_WIDTH = 200  # left column with the prompt
HEADER_HEIGHT = 24  # top row with the seeds
MIN_TILE = 128  # small images are upscaled (nearest) to at least this, so grids stay legible


def tile_size(resolution: int) -> int:
    return max(resolution, MIN_TILE)


def make_grid(images: list[list[Image.Image]], prompts: list[str], seeds: list[int], tile: int) -> Image.Image:
    """rows = prompts, columns = seeds; size (LABEL_WIDTH + cols*tile, HEADER_HEIGHT + rows*tile)."""
    grid = Image.new("RGB", (LABEL_WIDTH + len(seeds) * tile, HEADER_HEIGHT + len(prompts) * tile), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=12)
    for c, seed in enumerate(seeds):
        draw.text((LABEL_WIDTH + c * tile + 4, 5), f"seed {seed}", fill="black", font=font)
    for r, prompt in enumerate(prompts):
        top = HEADER_HEIGHT + r * tile
        draw.multiline_text((4, top + 4), "\n".join(textwrap.wrap(prompt, 30)[:8]), fill="black", font=font)
        for c, image in enumerate(images[r]):
            grid.paste(image.resize((tile, tile), Image.Resampling.NEAREST), (LABEL_WIDTH + c * tile, top))
    return grid


def fmt_value(value) -> str:
    """A grid or table label for a value (floats with 5 significant digits)."""
    return f"{value:.5g}" if isinstance(value, float) else str(value)
