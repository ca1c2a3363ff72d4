"""The doctor where datasets are used (issue 29 item 3): a training run prints the cheap checks' severe findings before
the model loads (`data.doctor=fatal` stops it there, `off` skips them), and `sdft data prepare` runs the doctor on the
sets it wrote. Also the face-identity model's wrapper (sdft/prep/face_identity.py)."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
from helpers.config import FAST, compose_config
from helpers.doctor_sets import grace
from helpers.photos import astronaut, write_photos
from PIL import ImageOps

import sdft.run.train as train_module
import sdft.run.wiring as wiring
from sdft.cli import main
from sdft.errors import ConfigError, DataError


class ModelLoaded(Exception):
    """Raised by the stubbed model loader: the run got past the start checks."""


@pytest.fixture
def no_model(monkeypatch):
    def load(cfg):
        raise ModelLoaded()

    monkeypatch.setattr(wiring, "load_pipeline", load)


def run_config(root, tmp_path, mode: str):
    return compose_config(
        ["model=tiny", f"data.instance_dir={root}", "data.instance_prompt=photo of sks woman", "data.trigger=sks"]
        + ["data.ensure_trigger=false", f"data.doctor={mode}", f"output_dir={tmp_path / 'run'}", *FAST]
    )


@pytest.fixture
def set_without_trigger(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    astronaut().save(root / "a.png")
    (root / "a.txt").write_text("a woman in an orange suit", encoding="utf-8")  # the trigger is missing
    return root


def test_fatal_stops_before_the_model_loads(set_without_trigger, tmp_path, no_model):
    with pytest.raises(DataError, match=r"data.doctor=fatal: 1 severe .*lack the trigger 'sks'"):
        train_module.run(run_config(set_without_trigger, tmp_path, "fatal"))


def test_warn_logs_severe_findings_then_trains_on(set_without_trigger, tmp_path, no_model, caplog):
    with caplog.at_level(logging.WARNING, logger="sdft.doctor"), pytest.raises(ModelLoaded):
        train_module.run(run_config(set_without_trigger, tmp_path, "warn"))
    assert any("[SEVERE] trigger" in r.getMessage() for r in caplog.records)


def test_off_skips_the_checks(set_without_trigger, tmp_path, no_model, caplog):
    with caplog.at_level(logging.WARNING, logger="sdft.doctor"), pytest.raises(ModelLoaded):
        train_module.run(run_config(set_without_trigger, tmp_path, "off"))
    assert not [r for r in caplog.records if r.name == "sdft.doctor"]


def test_prepare_runs_the_doctor_on_what_it_wrote(tmp_path, capsys):
    src, out = tmp_path / "photos", tmp_path / "prepared"
    write_photos(src)
    before = sorted(p.name for p in src.iterdir())
    assert main(["data", "prepare", str(src), str(out), "--no-preview"]) == 0
    assert sorted(p.name for p in src.iterdir()) == before
    report = json.loads((out / "doctor.json").read_text())
    assert {d["label"] for d in report["datasets"]} == {"face", "body"}
    assert (out / "doctor.html").is_file() and "Doctor: " in capsys.readouterr().out
    assert not list((out / "face").glob("doctor*"))  # beside the sets, not in them


def test_face_identity_same_and_other_person():
    from sdft.prep.face_identity import SAME_PERSON, FaceIdentity, distance

    fi = FaceIdentity()
    a = fi.faces(np.asarray(astronaut()))
    assert a and a[0].descriptor.shape == (128,)
    mirrored = fi.faces(np.asarray(ImageOps.mirror(astronaut())))[0].descriptor
    other = fi.faces(np.asarray(grace()))[0].descriptor
    assert distance(a[0].descriptor, mirrored) < SAME_PERSON < distance(a[0].descriptor, other)


def test_face_identity_without_dlib_names_the_extra(monkeypatch):
    from sdft.prep.face_identity import FaceIdentity

    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(ConfigError, match=r"dlib-bin face-recognition-models .*\.\[faces\]"):
        FaceIdentity()
