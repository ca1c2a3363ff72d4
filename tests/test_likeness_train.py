"""The likeness meter in a toy-world run: measured at each checkpoint and at the end, table / chart / recommendation,
`<phase>/best/`, keep-K never pruning the recommended checkpoint, `sdft eval checkpoints` post hoc, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers.config import compose_config
from sdft.errors import ConfigError, DataError
from sdft.run.train import run

TOY = [
    "+experiment=quickstart",
    "trainer.max_steps=6",
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "callbacks.checkpoint_every_n_steps=2",
    "callbacks.keep_last_k=1",
    "callbacks.validation_every_n_steps=0",
    "callbacks.validation_at_start=false",
    "callbacks.validation_seeds=[0]",
    "callbacks.validation_steps=4",
    "callbacks.likeness.seeds=[0,1]",
    "callbacks.likeness.num_flex_prompts=1",
    "callbacks.likeness.max_share=0",
    "callbacks.likeness.tolerance=1.0",  # every checkpoint is within tolerance: the earliest (step 2) is recommended
]


SLOW = pytest.mark.slow  # the toy run (6 steps, 3 measurements) shared by these tests: ~40 s idle, minutes contended


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("likeness") / "run"
    summary = run(compose_config(TOY + [f"output_dir={out}"]))
    assert summary["likeness"]["recommended_step"] == 2
    return out


@SLOW
def test_meter_table_chart_best_and_keep_k_guard(toy_run):
    phase = toy_run / "main"
    doc = json.loads((phase / "likeness" / "likeness.json").read_text())
    assert [r["step"] for r in doc["rows"]] == [2, 4, 6] and doc["metric"] == "toy"
    for r in doc["rows"]:
        assert 0 <= r["likeness"] <= 1 and 0 <= r["leakage"] <= 1 and 0 <= r["flexibility"] <= 1
        assert r["val_loss"] > 0 and r["adherence"] is not None
    assert doc["prompts"]["instance"] == "a sks dog" and doc["prompts"]["cls"] == "a dog"
    assert (phase / "likeness" / "likeness.png").is_file() and (phase / "likeness" / "likeness.csv").is_file()
    # keep_last_k=1 would have pruned step 2 when step 4 was saved: it is the recommended one
    assert (phase / "checkpoints" / "step_000002").is_dir()
    assert (phase / "best" / "STEP").read_text().strip() == "2"
    assert (phase / "best" / "pytorch_lora_weights.safetensors").is_file()
    assert not list((phase / "best").glob("*.ckpt"))
    summary = json.loads((toy_run / "summary.json").read_text())
    assert summary["likeness"]["best_dir"] == str(phase / "best")
    metrics = (next(toy_run.glob("**/metrics.csv"))).read_text().splitlines()[0]
    assert "likeness/likeness" in metrics and "likeness/leakage" in metrics  # line charts in the run's logger


@SLOW
def test_post_hoc_on_the_saved_checkpoints(toy_run, tmp_path):
    from sdft.cli import main

    copy = tmp_path / "copy"
    shutil.copytree(toy_run, copy)
    shutil.rmtree(copy / "main" / "likeness")
    shutil.rmtree(copy / "main" / "best")
    assert main(["eval", "checkpoints", str(copy)]) == 0
    during = json.loads((toy_run / "main" / "likeness" / "likeness.json").read_text())
    after = json.loads((copy / "main" / "likeness" / "likeness.json").read_text())
    assert [r["step"] for r in after["rows"]] == [2, 4, 6]  # keep_last_k=1 kept step 4 and the recommended step 2
    assert after["recommended"]["step"] == 2 and (copy / "main" / "best" / "STEP").read_text().strip() == "2"
    assert after["rows"][0]["val_loss"] == pytest.approx(during["rows"][0]["val_loss"], rel=1e-3)


@SLOW
def test_bad_input_one_clear_error_nothing_written(toy_run, tmp_path):
    from sdft.run.likeness_posthoc import evaluate_checkpoints

    with pytest.raises(ConfigError, match="trained on base 'toy'"):
        evaluate_checkpoints(toy_run, model="tiny")
    empty = tmp_path / "empty"
    shutil.copytree(toy_run, empty)
    for d in ("checkpoints", "lora", "likeness", "best"):
        shutil.rmtree(empty / "main" / d)
    with pytest.raises(DataError, match="no saved LoRA checkpoints"):
        evaluate_checkpoints(empty)
    assert not (empty / "main" / "likeness").exists() and not (empty / "main" / "best").exists()


@SLOW
def test_image_metric_on_the_tiny_base(fast_config, tmp_path):
    """auto on a base that is not the toy world and draws no faces: DINO likeness, CLIP-I, CLIP-T adherence (the
    offline tiny feature models); the tiny base is known to draw no faces, so no face detector is loaded."""
    summary = run(
        fast_config(
            "trainer.max_steps=2",
            "callbacks.checkpoint_every_n_steps=1",
            "callbacks.likeness.enabled=true",
            "callbacks.likeness.seeds=[0]",
            "callbacks.likeness.num_flex_prompts=1",
            "callbacks.likeness.max_share=0",  # both checkpoints (the budget would skip step 1: its test is elsewhere)
        )
    )
    doc = json.loads((tmp_path / "out" / "main" / "likeness" / "likeness.json").read_text())
    assert doc["metric"] == "image" and [r["step"] for r in doc["rows"]] == [1, 2]
    assert all(-1 <= r["likeness"] <= 1 and "clip_i" in r and r["adherence"] is not None for r in doc["rows"])
    assert summary["likeness"]["recommended_step"] in (1, 2)


@SLOW
def test_forced_face_metric_without_faces_fails_before_training(tmp_path):
    pytest.importorskip("dlib")
    out = tmp_path / "run"
    with pytest.raises(DataError, match="faces found in only 0 of"):
        run(compose_config(TOY + [f"output_dir={out}", "callbacks.likeness.metric=face"]))
    assert not (out / "main" / "checkpoints").exists() and not (out / "main" / "likeness").exists()
