"""The likeness meter's measurement of one checkpoint and the run-level bookkeeping (rows, recommendation, outputs).

`LikenessMeter.measure(sample)` renders the instance prompt and the class prompt at `seeds` and each varied prompt
at `flex_seeds` through `sample(prompts, seeds) -> rows of images` (the validation grid's sampler during training,
a Generator post hoc) and scores them:
likeness (instance prompt), flexibility (likeness over the varied prompts), adherence (the varied prompts followed:
CLIP-T, or the toy background), leakage (the class prompt's samples scored against the subject).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Callable

from PIL import Image

from sdft.evaluation.likeness_prompts import MeterPrompts
from sdft.evaluation.likeness_rule import Rule
from sdft.evaluation.likeness_table import write_table

log = logging.getLogger(__name__)
Sampler = Callable[[list[str], list[int]], list[Image.Image]]  # one image per (prompt, seed) pair, one batch
BEST_DIR = "best"
LIKENESS_DIR = "likeness"


class LikenessMeter:
    def __init__(self, scorer, prompts: MeterPrompts, seeds: list[int], flex_seeds: list[int], batch_size: int = 10):
        self.scorer, self.prompts = scorer, prompts
        self.seeds, self.flex_seeds = list(seeds), list(flex_seeds)
        self.batch_size = max(batch_size, 1)

    def pairs(self) -> list[tuple[str, int]]:
        """(prompt, seed) of every sample: instance prompt x seeds, class prompt x seeds, varied prompts x flex_seeds."""
        out = [(self.prompts.instance, s) for s in self.seeds] + [(self.prompts.cls, s) for s in self.seeds]
        return out + [(p, s) for p in self.prompts.varied for s in self.flex_seeds]

    def images_per_measurement(self) -> int:
        return len(self.pairs())

    def measure(self, sample: Sampler) -> dict:
        pairs, images = self.pairs(), []
        for i in range(0, len(pairs), self.batch_size):  # batch_size images per pipeline call
            chunk = pairs[i : i + self.batch_size]
            images += sample([p for p, _ in chunk], [s for _, s in chunk])
        n = len(self.seeds)
        own, cls, flat = images[:n], images[n : 2 * n], images[2 * n :]
        flat_prompts = [p for p, _ in pairs[2 * n :]]
        row = {
            "likeness": self.scorer.likeness(own),
            "flexibility": self.scorer.likeness(flat) if flat else None,
            "adherence": self.scorer.adherence(flat, flat_prompts) if flat else None,
            "leakage": self.scorer.likeness(cls),
        }
        row.update(self.scorer.details(own))
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


class LikenessRecord:
    """The rows of one phase, the recommendation, and its outputs in `<phase_dir>/likeness/` and `<phase_dir>/best/`."""

    def __init__(self, phase_dir: Path, rule: Rule, info: dict):
        self.phase_dir, self.rule, self.info = Path(phase_dir), rule, info
        self.rows: list[dict] = []

    @property
    def out_dir(self) -> Path:
        return self.phase_dir / LIKENESS_DIR

    def add(self, step: int, checkpoint: Path, values: dict) -> None:
        self.rows = [r for r in self.rows if r["step"] != step]  # a re-measured step (resume) replaces its row
        self.rows.append({"step": step, "checkpoint": str(checkpoint), **values})
        self.rows.sort(key=lambda r: r["step"])

    def recommended(self) -> dict | None:
        """The rule over the rows whose checkpoint still exists (rows keep `available`)."""
        for r in self.rows:
            r["available"] = Path(r["checkpoint"]).exists()
        scored = [
            {**r, "flexibility": r["flexibility"] if r["flexibility"] is not None else r["likeness"]} for r in self.rows
        ]
        i = self.rule.recommend(scored)
        return self.rows[i] if i is not None else None

    def write(self) -> list[Path]:
        chosen = self.recommended()
        index = self.rows.index(chosen) if chosen is not None else None
        return write_table(self.out_dir, self.rows, index, {**self.info, "rule": vars(self.rule)})

    def copy_best(self) -> Path | None:
        """The recommended checkpoint's LoRA files (not its resumable state.ckpt) into `<phase_dir>/best/`, replacing
        what was there only once the copy is complete."""
        chosen = self.recommended()
        if chosen is None:
            return None
        src, dest = Path(chosen["checkpoint"]), self.phase_dir / BEST_DIR
        tmp = self.phase_dir / f".{BEST_DIR}-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in src.iterdir():
            if f.is_file() and f.suffix != ".ckpt":
                shutil.copy2(f, tmp / f.name)
        (tmp / "STEP").write_text(f"{chosen['step']}\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        log.info("Recommended checkpoint: step %d (%s), copied to %s", chosen["step"], src, dest)
        return dest
