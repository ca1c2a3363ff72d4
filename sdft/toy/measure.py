"""How well a DreamBooth run on the toy base learned its subject: fidelity, leakage and class drift, per training seed
and as mean ± spread, so that techniques (prior preservation, EMA, masked loss, other adapters) compare with one call.

- fidelity: share of identifier-prompt generations (`a sks dog`) that match the subject on every attribute the
  detector reads (class, main colour, second colour, pattern; the background is a nuisance, not the subject);
- spots: share of identifier-prompt generations whose pattern reads as three separate spots, as the world draws
  them, and not as one band (sdft.toy.detector.separate_spots; fidelity counts a band over the spot positions as
  spots, so a subject learned with its spots smeared into a band still scores there); for a spotted subject only;
- leakage: the same share for class-prompt generations (`a dog`): the subject bleeding into its class;
- drift: how far the class prompt's attribute distribution moved from the base model's, at the same seeds: the mean
  over class, main colour, second colour, pattern and background of the total-variation distance (0..1) between the
  two distributions of detected values (0: the class prompt draws what the base drew).

    from sdft.toy.measure import measure, multi_seed, quickstart_lora
    summary = multi_seed(lambda s: measure(pipe, quickstart_lora(s, out, ["prior.enabled=false"]), reference=ref),
                         seeds=range(5))
    print(summary.table())
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from sdft.errors import DataError
from sdft.toy.control import sample
from sdft.toy.detector import detect, separate_spots
from sdft.toy.subject import SUBJECT_KEYS, matches, subject_attributes

IDENTIFIER_PROMPT = "a sks dog"  # the quickstart's instance prompt
CLASS_PROMPT = "a dog"  # and its class prompt
SAMPLES = 32  # generations per prompt
IDENTIFIER_SEED, CLASS_SEED = 1000, 2000  # generation i uses seed + i
DRIFT_KEYS = SUBJECT_KEYS + ("background",)
METRICS = ("fidelity", "spots", "leakage", "drift")
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the checkout's configs (quickstart_lora)


def distribution(detections: Sequence[dict], key: str) -> dict[str | None, float]:
    counts = Counter(d[key] for d in detections)
    return {v: c / len(detections) for v, c in counts.items()}


def drift(detections: Sequence[dict], reference: Sequence[dict], keys: Sequence[str] = DRIFT_KEYS) -> float:
    """Mean total-variation distance over `keys` between two sets' distributions of detected values (0..1)."""
    tv = []
    for k in keys:
        p, q = distribution(detections, k), distribution(reference, k)
        tv.append(0.5 * sum(abs(p.get(v, 0.0) - q.get(v, 0.0)) for v in set(p) | set(q)))
    return float(np.mean(tv))


def detections(pipe, prompt: str, n: int = SAMPLES, seed: int = 0, **sampling) -> list[dict]:
    """Attributes of `n` generations of `prompt` (generation i seeded with seed + i), with their `marks`."""
    found = [detect(im) for im in sample(pipe, [prompt] * n, seed=seed, **sampling)]
    return [{**d.attributes(), "marks": d.marks} for d in found]


@dataclass
class Measurement:
    fidelity: float
    leakage: float
    drift: float
    spots: float = 0.0
    identifier: list[dict] = field(default_factory=list, repr=False)  # per-generation attributes
    classes: list[dict] = field(default_factory=list, repr=False)

    def row(self) -> dict[str, float]:
        return {m: round(getattr(self, m), 4) for m in METRICS}


def base_reference(pipe, class_prompt: str = CLASS_PROMPT, n: int = SAMPLES, **sampling) -> list[dict]:
    """The base model's class-prompt detections: what `drift` compares against (compute once, before any LoRA)."""
    return detections(pipe, class_prompt, n, CLASS_SEED, **sampling)


def measure(
    pipe,
    lora: str | Path | None = None,
    *,
    subject: dict[str, str] | None = None,
    reference: list[dict] | None = None,
    identifier_prompt: str = IDENTIFIER_PROMPT,
    class_prompt: str = CLASS_PROMPT,
    n: int = SAMPLES,
    **sampling,
) -> Measurement:
    """Fidelity, spots, leakage and drift of `pipe` (with the LoRA file or run folder `lora` loaded for the measurement,
    unloaded after). `subject` defaults to the bundled toy subject; `reference` (base_reference of the same pipe
    without LoRA, reused across calls) is computed here when not given."""
    if subject is None:
        subject = toy_subject()
    if reference is None:
        reference = base_reference(pipe, class_prompt, n, **sampling)
    if lora is not None:
        from sdft.generation.params import resolve_lora_file  # imports diffusers: only when a LoRA is loaded

        pipe.load_lora_weights(str(resolve_lora_file(lora)), adapter_name="measured")
    try:
        ident = detections(pipe, identifier_prompt, n, IDENTIFIER_SEED, **sampling)
        classes = detections(pipe, class_prompt, n, CLASS_SEED, **sampling)
    finally:
        if lora is not None:
            pipe.unload_lora_weights()
    return Measurement(
        fidelity=float(np.mean([matches(d, subject) for d in ident])),
        leakage=float(np.mean([matches(d, subject) for d in classes])),
        drift=drift(classes, reference),
        spots=float(np.mean([separate_spots(d) for d in ident])),
        identifier=ident,
        classes=classes,
    )


def toy_subject() -> dict[str, str]:
    """The bundled subject's attributes (datasets/toy_subject, read by the detector)."""
    from PIL import Image

    folder = CONF_DIR.parent / "datasets" / "toy_subject"
    return subject_attributes(Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png")))


@dataclass
class Summary:
    seeds: list[int]
    per_seed: list[dict[str, float]]

    @property
    def mean(self) -> dict[str, float]:
        return {m: float(np.mean([r[m] for r in self.per_seed])) for m in METRICS}

    @property
    def std(self) -> dict[str, float]:
        return {
            m: float(np.std([r[m] for r in self.per_seed], ddof=1)) if len(self.per_seed) > 1 else 0.0 for m in METRICS
        }

    def table(self, label: str = "") -> str:
        """A markdown table: one row per seed, then mean ± sample standard deviation."""
        lines = [f"| {label or 'seed'} | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
        lines += [
            f"| {s} | " + " | ".join(f"{r[m]:.3f}" for m in METRICS) + " |" for s, r in zip(self.seeds, self.per_seed)
        ]
        lines.append("| mean ± sd | " + " | ".join(f"{self.mean[m]:.3f} ± {self.std[m]:.3f}" for m in METRICS) + " |")
        return "\n".join(lines)


def multi_seed(fn: Callable[[int], Measurement], seeds: Iterable[int]) -> Summary:
    """`fn(seed)` (train with that seed, then `measure`) for every seed: per-seed rows, mean and spread."""
    seeds = list(seeds)
    return Summary(seeds, [fn(s).row() for s in seeds])


QUIET = [  # no grids, checkpoints, loggers or progress bar inside a measured (or timed) training run
    "logger=none",
    "trainer.enable_progress_bar=false",
    "callbacks.checkpoint_every_n_steps=0",
    "callbacks.validation_every_n_steps=0",
    "callbacks.validation_at_start=false",
    "callbacks.validation_seeds=[]",
    "callbacks.fixed_noise_loss=false",
]


def quickstart_lora(seed: int, out_dir: str | Path, overrides: Sequence[str] = (), reuse: bool = False) -> Path:
    """Train `+experiment=quickstart` (plus `overrides`) with `seed`, quietly, under `out_dir`; the final LoRA file.
    Class images go to `<out_dir>/class` (shared by every run under `out_dir`) unless an override says otherwise.
    `reuse`: when that run's folder already holds its final LoRA (summary.json's output), return it untrained."""
    from hydra import compose, initialize_config_dir

    import sdft.config  # noqa: F401  (registers the config schema)
    from sdft.run.train import run

    out_dir = Path(out_dir)
    run_dir = out_dir / f"seed{seed}-{hashlib.sha1(repr(list(overrides)).encode()).hexdigest()[:8]}"
    if reuse and (run_dir / "summary.json").is_file():
        done = json.loads((run_dir / "summary.json").read_text()).get("output")
        if done and Path(done).is_file():
            return Path(done)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "+experiment=quickstart",
                f"seed={seed}",
                f"output_dir={run_dir}",
                f"data.class_dir={out_dir / 'class'}",
                *QUIET,
                *overrides,
            ],
        )
    summary = run(cfg)
    if not summary.get("output"):
        raise DataError(f"The run in {run_dir} wrote no LoRA file (summary: {summary}).")
    return Path(summary["output"])
