"""What `sdft ui` does behind its widgets, free of gradio: one `Generator` (the base is loaded once), LoRA lines
(`PATH[:WEIGHT]`; the scan for LoRA files is sdft/generation/lora_scan.py), and renders written exactly as `sdft generate` writes them (numbered PNGs
with the A1111 `parameters` text, via `run_generation`). Errors are `SdftError`s; sdft/ui/app.py shows them to people.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sdft.errors import ConfigError
from sdft.generation.generator import Generator
from sdft.generation.params import GenerationParams, LoraSpec, resolve_lora_file
from sdft.generation.run import run_generation


@dataclass
class Render:
    """One click's result: the files written (in order), their seeds and their A1111 infotexts."""

    files: list[Path]
    seeds: list[int]
    infotexts: list[str]


def parse_lora_lines(text: str | None) -> list[LoraSpec]:
    """One LoRA per line, `PATH[:WEIGHT]` (weight 1 when left out); blank lines and `#` comments are skipped."""
    specs = []
    for number, raw in enumerate((text or "").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        spec = LoraSpec.parse(line)
        if not math.isfinite(spec.weight):
            raise ConfigError(f"LoRA line {number} ({line!r}): the weight must be a finite number.")
        specs.append(spec)
    return specs


def format_lora_lines(specs: list[LoraSpec]) -> str:
    return "\n".join(f"{spec.path}:{spec.weight:g}" for spec in specs)


class UiSession:
    """The state of one UI: its Generator and output folder. One render at a time (the pipeline is not thread-safe)."""

    def __init__(self, generator: Generator, out_dir: str | Path):
        self.generator = generator
        self.out_dir = Path(out_dir)
        self._lock = threading.Lock()

    def generate(
        self,
        *,
        prompt: str,
        negative_prompt: str = "",
        scheduler: str,
        steps: int,
        guidance: float,
        width: int,
        height: int,
        seed: int,
        batch_size: int = 1,
        batch_count: int = 1,
        lora_text: str = "",
        lora_dir: str | None = None,
        init_image: Image.Image | None = None,
        strength: float = 0.75,
    ) -> Render:
        """Render txt2img (or img2img when `init_image` is given) and write the PNGs into the output folder. The
        prompt's `<lora:name:weight>` tags join the LoRA lines (names looked up under `lora_dir`)."""
        params = GenerationParams(
            prompt=prompt or "",
            negative_prompt=negative_prompt or "",
            steps=int(steps),
            guidance=float(guidance),
            scheduler=scheduler,
            seed=int(seed if seed is not None else -1),
            width=int(width),
            height=int(height),
            batch_size=int(batch_size),
            batch_count=int(batch_count),
            init_image=init_image,
            strength=float(strength),
            loras=parse_lora_lines(lora_text),
            lora_dir=lora_dir,
        )
        with self._lock:
            result = run_generation(self.generator, params, self.out_dir)
        infotexts = []
        for path in result.files:
            with Image.open(path) as image:
                infotexts.append(image.text.get("parameters", ""))
        return Render(result.files, result.seeds, infotexts)

    def check_loras(self, lora_text: str) -> str:
        """Load (and check) the listed LoRAs now, so a bad one is reported before a render; returns the status."""
        specs = parse_lora_lines(lora_text)
        with self._lock:
            self.generator.set_loras(specs)
        return self.lora_status()

    def add_lora(self, lora_text: str, path: str | None, weight: float) -> str:
        """The LoRA lines with `path` appended at `weight` (or re-weighted, when already listed)."""
        if not path:
            raise ConfigError("Pick a LoRA first (Scan lists the LoRAs under the folder).")
        resolve_lora_file(path)  # a clear error now for a path that has gone
        specs = [s for s in parse_lora_lines(lora_text) if s.path != path]
        return format_lora_lines([*specs, LoraSpec(path, float(weight))])

    def lora_status(self) -> str:
        """A short markdown summary: the LoRAs in use (with weights) and the ones loaded (cached, inactive)."""
        gen = self.generator
        active = {lora.path for lora, _ in gen.active}
        lines = [
            f"- **{lora.name}** at {weight:g} ({', '.join(lora.parts)}) `{lora.path}`" for lora, weight in gen.active
        ]
        lines += [gen.embeddings.describe()] if gen.embeddings.sources else []  # textual-inversion tokens to write
        idle = [
            f"- {lora.name} (loaded, not in use) `{lora.path}`" for lora in gen.loaded_loras if lora.path not in active
        ]
        if not lines and not idle:
            return "No LoRA loaded: the base model alone."
        return "\n".join(lines + idle)
