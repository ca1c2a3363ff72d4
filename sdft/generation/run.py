"""`run_generation`: sweeps (guidance x strength x the last LoRA's weight) over the same seeds, into numbered PNGs
with A1111 metadata and one labelled grid; what `sdft generate` and `sdft ui` write."""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from PIL import Image

from sdft.errors import ConfigError
from sdft.generation.generator import Generator
from sdft.generation.infotext import lora_display_name, save_png, short_number
from sdft.generation.params import GenerationParams, resolve_lora_file
from sdft.generation.prompt_loras import with_prompt_loras

log = logging.getLogger(__name__)


def _next_index(out_dir: Path) -> int:
    """A1111-style numbering: one more than the highest NNNNN- prefix already in the folder."""
    numbers = [int(m.group(1)) for p in out_dir.glob("*.png") if (m := re.match(r"(\d+)-", p.name))]
    return max(numbers, default=-1) + 1


@dataclass
class RunResult:
    files: list[Path]
    grid: Path | None
    rows: list[str]  # grid row labels (sweep values)
    seeds: list[int]


def run_generation(
    gen: Generator,
    params: GenerationParams,
    out_dir: str | Path,
    *,
    guidance: Sequence[float] | None = None,
    strength: Sequence[float] | None = None,
    lora_weights: Sequence[float] | None = None,
) -> RunResult:
    """Render every combination of the sweep values (guidance x strength x last-LoRA weight: the prompt's last
    `<lora:...>` tag when it has any) over the same seeds;
    write one PNG per image and, when anything is swept, one labelled grid (rows = combinations, columns = seeds)."""
    from sdft.images_grid import make_grid, tile_size

    out_dir = Path(out_dir)
    params = with_prompt_loras(params)  # `<lora:name:weight>` in the prompt: after the listed LoRAs
    guidance = list(guidance or [params.guidance])
    strength = list(strength or [params.strength])
    lora_weights = list(lora_weights or [])
    if len(strength) > 1 and params.init_image is None:
        raise ConfigError("A --strength sweep needs --init-image (strength is img2img's denoising strength).")
    if lora_weights and not params.loras:
        raise ConfigError("--lora-weight-sweep needs at least one --lora (it re-weights the last one).")
    weights = lora_weights or [None]
    seeds = gen.seeds(params)
    index = _next_index(out_dir)
    files: list[Path] = []
    rows: list[list[Image.Image]] = []
    labels: list[str] = []
    swept = len(guidance) > 1 or len(strength) > 1 or len(lora_weights) > 1
    for cfg_scale, denoise, weight in itertools.product(guidance, strength, weights):
        loras = list(params.loras)
        if weight is not None:
            loras[-1] = replace(loras[-1], weight=weight)
        row_params = replace(params, guidance=cfg_scale, strength=denoise, loras=loras)
        images = gen.generate(row_params, seeds)
        for item in images:
            files.append(save_png(item.image, out_dir / f"{index:05d}-{item.seed}.png", item.infotext))
            index += 1
        rows.append([item.image for item in images])
        label = [f"CFG {short_number(cfg_scale)}"] if len(guidance) > 1 else []
        label += [f"strength {short_number(denoise)}"] if len(strength) > 1 else []
        if weight is not None:
            label.append(f"{lora_display_name(resolve_lora_file(loras[-1].path))}: {short_number(weight)}")
        labels.append(", ".join(label) or params.prompt)
    grid_path = None
    if swept:
        width, height = rows[0][0].size
        grid = make_grid(rows, labels, seeds, tile_size(max(width, height)))
        grid_path = save_png(grid, out_dir / f"grid-{index:05d}.png", rows[0][0].info.get("parameters", ""))
    log.info("Wrote %d image(s) to %s%s", len(files), out_dir, f" and grid {grid_path}" if grid_path else "")
    return RunResult(files, grid_path, labels, seeds)
