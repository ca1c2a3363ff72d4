"""Bad input fails early with a message that says what is wrong; a NaN loss stops training before saving."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from helpers.config import ROOT
from sdft.config import ModelConfig
from sdft.errors import ConfigError, DataError, ModelLoadError, NonFiniteLossError
from sdft.families.load import load_pipeline
from sdft.run.train import run
from helpers.wiring import prepare_for_test


def test_prior_without_class_prompt(fast_config):
    with pytest.raises(ConfigError, match="data.class_prompt"):
        run(fast_config("prior=default", "data.class_prompt=null"))


def test_bad_instance_dir_fails_before_model_loads(fast_config, monkeypatch, tmp_path):
    monkeypatch.setattr("sdft.run.wiring.load_pipeline", lambda cfg: pytest.fail("model loaded before data check"))
    with pytest.raises(DataError, match="does not exist"):
        run(fast_config(f"data.instance_dir={tmp_path / 'missing'}"))


def test_missing_model_folder_and_not_a_pipeline(tmp_path):
    with pytest.raises(ModelLoadError, match="neither an existing folder"):
        load_pipeline(ModelConfig(path="./no/such/../folder"))
    with pytest.raises(ModelLoadError, match="model_index.json"):
        load_pipeline(ModelConfig(path=str(tmp_path)))


def test_uncached_hub_id_offline_names_alternatives(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="model=tiny"):
        load_pipeline(ModelConfig(path="someone/not-cached-model"))


def test_nan_loss_stops_and_saves_nothing(fast_config, tmp_path):
    parts = prepare_for_test(fast_config())
    with torch.no_grad():
        next(p for n, p in parts.module.unet.named_parameters() if "lora_A" in n).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="Lower optim.lr"):
        parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    assert not (tmp_path / "out" / "main" / "lora").exists()


def test_cli_bad_data_path_is_one_readable_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", f"data.instance_dir={tmp_path / 'nope'}", f"output_dir={tmp_path / 'o'}"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
