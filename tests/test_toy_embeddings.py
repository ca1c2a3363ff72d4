"""Textual inversion alone learns something of the toy subject: `a <sks> dog` generations move towards it.

Measured with the toy detector's colour histograms (sdft/toy/detector.py) at fixed seeds, as tests/test_toy_learning.py
does for the LoRA; the figures are printed (pytest -s) and noted in docs/embeddings.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from helpers.config import compose_config
from sdft.embeddings.files import load_embedding_file
from sdft.embeddings.tokens import word_embedding
from sdft.toy.control import sample
from sdft.toy.detector import detect, subject_distance
from sdft.models.toy_weights import load_toy_pipeline
from sdft.run.train import run

ROOT = Path(__file__).resolve().parents[1]
SUBJECT = sorted((ROOT / "datasets" / "toy_subject").glob("*.png"))
PROMPT = "a <sks> dog"  # the textual_inversion experiment's instance prompt
SEEDS = 48  # generations per measurement


def _measure(pipe, prompt: str, subject) -> tuple[float, int]:
    images = sample(pipe, [prompt] * SEEDS, seed=1000)
    return subject_distance(images, subject), sum(detect(i).colour == "blue" for i in images)


@pytest.mark.slow
def test_textual_inversion_moves_the_token_towards_the_subject(tmp_path):
    subject = [Image.open(p).convert("RGB") for p in SUBJECT]
    cfg = compose_config(
        [
            "+experiment=textual_inversion",
            f"output_dir={tmp_path / 'ti'}",
            "trainer.enable_progress_bar=false",
            "logger=none",
            "callbacks.checkpoint_every_n_steps=0",
            "callbacks.validation_every_n_steps=0",
            "callbacks.validation_at_start=false",
            "callbacks.validation_seeds=[]",
            "callbacks.fixed_noise_loss=false",
        ]
    )
    summary = run(cfg)
    token, trained = load_embedding_file(summary["output"])

    start = load_toy_pipeline()  # the untrained token: <sks> = the init word's embedding (dog)
    start.load_textual_inversion(word_embedding(start.tokenizer, start.text_encoder, "dog")[None], token=token)
    before, blue_before = _measure(start, PROMPT, subject)
    tuned = load_toy_pipeline()
    tuned.load_textual_inversion(summary["output"])
    after, blue_after = _measure(tuned, PROMPT, subject)
    reference, blue_reference = _measure(load_toy_pipeline(), "a blue dog", subject)  # the nearest one-colour prompt
    print(
        f"\n{PROMPT!r} -> subject colour-histogram distance (0..2, {SEEDS} seeds): untrained {before:.3f} "
        f"({blue_before} blue), trained {after:.3f} ({blue_after} blue); 'a blue dog' on the base {reference:.3f} "
        f"({blue_reference} blue); {summary['steps']} steps in {summary['train_seconds']} s"
    )
    assert after < before, (before, after)
