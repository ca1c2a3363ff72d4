"""DreamBooth learns on the toy base: a short LoRA run pulls identifier-prompt generations towards the subject, and
prior preservation keeps class-prompt generations closer to what the base drew before training.

Measured with the toy detector's colour histograms (sdft/toy/detector.py) on generations at fixed seeds; the figures
of one run are printed (pytest -s) and noted in sdft/toy/MODEL_CARD.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import compose_config
from sdft.toy.control import sample
from sdft.toy.detector import palette_distance, subject_distance
from sdft.toy.weights import load_toy_pipeline
from sdft.train import run

ROOT = Path(__file__).resolve().parents[1]
SUBJECT = sorted((ROOT / "datasets" / "toy_subject").glob("*.png"))
IDENTIFIER = "a sks dog"  # the quickstart's instance prompt
CLASS = "a dog"  # its class prompt: what prior preservation protects
SEEDS = 24  # generations per prompt
STEPS = 200  # the quickstart's length
TRAIN_SEEDS = (42, 43)
SUBJECT_GAIN = 0.3  # identifier generations: histogram distance to the subject must fall at least this much (of 2)
PRIOR_MARGIN = 0.2  # class generations: their pull towards the subject with prior this much below without
# The colour drift of the class generations is printed, not asserted: lower with prior preservation for seed 42, higher
# for seed 43 (not robust at 200 steps).
# figures measured on this machine: sdft/toy/MODEL_CARD.md


def _lora_run(tmp_path: Path, prior: bool, seed: int) -> Path:
    cfg = compose_config([
        "+experiment=quickstart", f"seed={seed}", f"output_dir={tmp_path / f'{seed}-{prior}'}",
        f"data.class_dir={tmp_path / 'class'}", f"prior.enabled={str(prior).lower()}", f"trainer.max_steps={STEPS}",
        "trainer.enable_progress_bar=false", "logger=none", "callbacks.checkpoint_every_n_steps=0",
        "callbacks.validation_every_n_steps=0", "callbacks.validation_at_start=false", "callbacks.validation_seeds=[0]",
        "callbacks.validation_steps=2", "callbacks.fixed_noise_loss=false",
    ])
    return Path(run(cfg)["output"])


def _generate(lora: Path | None) -> tuple[list[Image.Image], list[Image.Image]]:
    pipe = load_toy_pipeline()
    if lora is not None:
        pipe.load_lora_weights(str(lora))
    return sample(pipe, [IDENTIFIER] * SEEDS, seed=1000), sample(pipe, [CLASS] * SEEDS, seed=2000)


@pytest.mark.slow
def test_dreambooth_lora_learns_the_subject_and_prior_preservation_limits_drift(tmp_path):
    """Means over two training seeds: single 200-step runs vary a lot (see sdft/toy/MODEL_CARD.md)."""
    subject = [Image.open(p).convert("RGB") for p in SUBJECT]
    ident0, class0 = _generate(None)
    before = subject_distance(ident0, subject)
    rows = {True: [], False: []}  # prior -> [(identifier distance, class pull, class drift) per training seed]
    for seed in TRAIN_SEEDS:
        for prior in (True, False):
            ident, cls = _generate(_lora_run(tmp_path, prior, seed))
            pull = subject_distance(class0, subject) - subject_distance(cls, subject)  # class images turned subject-like
            rows[prior].append((subject_distance(ident, subject), pull, palette_distance(cls, class0)))
    (after_p, pull_p, drift_p), (after_n, pull_n, drift_n) = (np.mean(rows[True], axis=0), np.mean(rows[False], axis=0))
    print(f"\nper seed {TRAIN_SEEDS} (identifier distance, class pull, class drift): prior {rows[True]}, "
          f"no prior {rows[False]}\nidentifier -> subject distance: before {before:.3f}, after (prior) {after_p:.3f}, "
          f"after (no prior) {after_n:.3f}\nclass-prompt pull towards the subject: prior {pull_p:.3f}, "
          f"no prior {pull_n:.3f}\nclass-prompt colour drift from the base: prior {drift_p:.3f}, no prior {drift_n:.3f}")

    assert after_p < before - SUBJECT_GAIN, (before, after_p)
    assert after_n < before - SUBJECT_GAIN, (before, after_n)
    assert pull_p < pull_n - PRIOR_MARGIN, (pull_p, pull_n)
