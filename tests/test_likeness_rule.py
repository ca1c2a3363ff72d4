"""The recommended-checkpoint rule and the table/chart writer of the likeness meter (no model)."""

import json
import sys

import pytest

from PIL import Image

from sdft.evaluation.likeness_rule import Rule
from sdft.evaluation.likeness_table import write_table


def row(step, likeness, flexibility=None, leakage=0.0, available=True, val_loss=0.1):
    flex = likeness if flexibility is None else flexibility
    return dict(step=step, likeness=likeness, flexibility=flex, leakage=leakage, available=available, val_loss=val_loss)


def test_earliest_within_tolerance_of_the_best():
    rows = [row(50, 0.5), row(100, 0.85), row(150, 0.9), row(200, 0.95)]
    assert Rule(tolerance=0.1).recommend(rows) == 1  # 0.85 >= 0.95 - 0.1, earlier than 150 and 200
    assert Rule(tolerance=0.0).recommend(rows) == 3


def test_leakage_and_flexibility_bounds_exclude_overtrained_checkpoints():
    rows = [row(50, 0.6), row(100, 0.8, leakage=0.1), row(150, 1.0, leakage=0.7), row(200, 1.0, flexibility=0.2)]
    assert Rule(tolerance=0.05).recommend(rows) == 1  # 150 leaks (0.7 > 0.5 x 1.0), 200 only for its caption


def test_a_checkpoint_without_likeness_is_never_preferred_to_one_with_it():
    """Found by the overtraining study (bench/likeness_study.py, seed 0 at 2x lr): the LoRA learned by step 100
    (likeness 0.25, flexibility 0) and had wrecked the base by 200 (all 0); 0 <= 0.5 x 0 made step 200 the only
    "eligible" checkpoint, so the rule recommended a checkpoint that had forgotten the subject."""
    rows = [row(50, 0.25, flexibility=0.0, leakage=0.25), row(100, 0.25, flexibility=0.0), row(200, 0.0), row(800, 0.0)]
    assert Rule().recommend(rows) == 0  # none eligible: the earliest of the best likeness
    rows = [row(100, 0.5, flexibility=0.4), row(200, 0.0)]
    assert Rule().recommend(rows) == 0


def test_none_eligible_falls_back_to_all_and_never_a_pruned_one():
    rows = [row(50, 0.4, leakage=0.4), row(100, 0.9, leakage=0.9, available=False), row(150, 0.8, leakage=0.8)]
    assert Rule(tolerance=0.05).recommend(rows) == 2  # 100 is gone; none is within bounds: best likeness of the rest
    assert Rule().recommend([row(50, 1.0, available=False)]) is None


def test_table_json_csv_and_chart(tmp_path):
    rows = [
        {"step": 50, "checkpoint": "a", "likeness": 0.5, "flexibility": 0.5, "leakage": 0.0, "val_loss": 0.2},
        {"step": 100, "checkpoint": "b", "likeness": 0.9, "flexibility": 0.7, "leakage": 0.1, "val_loss": None},
    ]
    paths = write_table(tmp_path, rows, 1, {"metric": "toy"})
    assert [p.name for p in paths] == ["likeness.csv", "likeness.json", "likeness.png"]
    doc = json.loads((tmp_path / "likeness.json").read_text())
    assert doc["recommended"]["step"] == 100 and doc["metric"] == "toy" and len(doc["rows"]) == 2
    lines = (tmp_path / "likeness.csv").read_text().splitlines()
    assert lines[0].startswith("step,checkpoint,likeness,flexibility,leakage,val_loss")
    assert lines[2].endswith("True") and lines[1].endswith("False")
    chart = Image.open(tmp_path / "likeness.png").convert("RGB")
    greens = sum(1 for p in chart.getdata() if p == (40, 170, 60))
    assert chart.width > 400 and greens > 100  # the recommended step's marker line is drawn
    assert not list(tmp_path.glob(".*"))  # no temp files left


def test_face_metric_without_dlib_names_the_extra(monkeypatch):
    from sdft.errors import ConfigError
    from sdft.evaluation.likeness_scorers import FaceScorer, face_identity

    monkeypatch.setitem(sys.modules, "dlib", None)  # as if dlib-bin were not installed
    face_identity.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r'pip install -e "\.\[faces\]"'):
            FaceScorer([Image.new("RGB", (64, 64))])
    finally:
        face_identity.cache_clear()


def test_a_step_checkpoint_is_measured_only_if_it_and_the_final_one_fit_the_budget():
    """Before any measurement its cost is estimated from the training step's time (sampling step = 2/3 of a training
    image's U-Net work): 10 images x 20 steps after 100 s of training is ~67 s at step 100, ~7 s at step 1000; the
    final measurement (always taken) is reserved within max_share of the whole run (projected to max_steps). Before
    this, the first step checkpoint was always measured, so short SD 1.5 runs spent ~20 % on the meter."""
    import time
    from types import SimpleNamespace

    from sdft.callbacks.likeness import LikenessCallback

    record = SimpleNamespace(rows=[])
    meter = SimpleNamespace(images_per_measurement=lambda: 10)
    callback = LikenessCallback(meter, record, grids=None, checkpoint=None, val_loss=None)
    callback.max_share, callback.images_per_step, callback.sampling_steps = 0.1, 2, 20
    callback._started = time.perf_counter() - 100.0
    assert not callback.within_budget(step=100, max_steps=200)  # 2 x 67 s > 10 % of 200 s
    assert callback.within_budget(step=100, max_steps=2000)  # 2 x 67 s <= 10 % of 2000 s
    assert not callback.within_budget(step=1000, max_steps=1000)  # 2 x 6.7 s > 10 % of 100 s
    assert callback.within_budget(step=1000, max_steps=1500)  # 2 x 6.7 s <= 10 % of 150 s
    callback.max_share = 0  # 0: every checkpoint
    assert callback.within_budget(step=100, max_steps=200)
    callback.max_share, callback.seconds = 0.1, 4.0  # after one measurement of 4 s: timed, not estimated
    record.rows = [{"step": 100}]
    callback._started = time.perf_counter() - 104.0
    assert callback.within_budget(step=100, max_steps=120)  # 4 + 2 x 4 <= 10 % of 120 s
    assert not callback.within_budget(step=100, max_steps=100)  # 12 > 10
