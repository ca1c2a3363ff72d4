"""A phase's data in figures: images per concept, repeats, buckets and their counts, epochs, steps, class images."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sdft.data.buckets import plan_buckets


@dataclass
class DataSummary:
    concepts: dict[str, dict] = field(default_factory=dict)  # name -> {images, repeats}
    buckets: dict[str, int] = field(default_factory=dict)  # "WxH" -> images
    largest: tuple[int, int] = (0, 0)  # the largest bucket (w, h): what the memory forecast traces
    steps: int = 0
    batch_size: int = 1
    accumulate: int = 1
    epochs: float = 0.0
    class_images: int = 0  # used per step's class half (given + generated)
    class_to_generate: int = 0


def _existing_images(folder: Path) -> int:
    from sdft.data.images import list_images

    return len(list_images(folder, True)) if folder.is_dir() else 0


def class_images_missing(cfg, data) -> tuple[int, int]:
    """(class images in use, still to generate) as prior_examples would find them (sdft/data/prior.py)."""
    from sdft.data.class_images import default_class_dir

    given = len(data.report.reg_examples)
    if not cfg.prior.enabled:
        return given, 0
    keys = {ex.class_key for ex in data.report.reg_examples}
    missing, used, done = 0, given, set()
    for c in data.report.concepts:
        if c.is_reg or not c.class_prompt or c.class_key in keys or c.class_key in done:
            continue
        done.add(c.class_key)
        folder = Path(c.class_dir or default_class_dir(cfg.model.path, c.class_prompt, data.settings.resolution))
        have = _existing_images(folder.expanduser())
        missing += max(0, cfg.prior.num_class_images - have)
        used += cfg.prior.num_class_images
    return used, missing


def summarise(cfg, data) -> DataSummary:
    """`cfg`: the phase's config; `data`: its PhaseData with native sizes filled in."""
    s = DataSummary(steps=cfg.trainer.max_steps, batch_size=cfg.data.batch_size)
    s.accumulate = cfg.trainer.accumulate_grad_batches
    for c in data.report.concepts:
        if not c.is_reg:
            n = sum(1 for e in data.instances if e.concept is c or (e.concept and e.concept.name == c.name))
            s.concepts[c.name] = {"images": n, "repeats": c.repeats}
    if not s.concepts:
        s.concepts["instance"] = {"images": len(data.instances), "repeats": data.settings.repeats}
    sizes = [e.size or (data.settings.resolution, data.settings.resolution) for e in data.instances]
    counts = Counter(plan_buckets(sizes, data.settings))
    s.buckets = {f"{w}x{h}": n for (w, h), n in sorted(counts.items())}
    s.largest = max(counts, key=lambda b: (b[0] * b[1], b)) if counts else (data.settings.resolution,) * 2
    per_epoch = sum(e.repeats for e in data.instances) or 1
    s.epochs = cfg.trainer.max_steps * cfg.data.batch_size * s.accumulate / per_epoch
    s.class_images, s.class_to_generate = class_images_missing(cfg, data)
    return s
