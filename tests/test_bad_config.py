"""Bad values are refused before any long work, with one clear line (issue 20, items 2, 4, 5, 8)."""

from __future__ import annotations

import logging
import shutil

import pytest

from helpers.config import EXAMPLE_SUBJECT

from sdft.errors import ConfigError
from sdft.train import prepare, run


@pytest.mark.parametrize(
    "override, says",
    [
        ("callbacks.keep_last_k=0", "keep_last_k"),
        ("data.repeats=0", "data.repeats"),
        ("optim.lr=0", "optim.lr"),
        ("data.resolution=60", "multiple of 8"),
        ("callbacks.validation_resolution=100", "multiple of 8"),
        ("adapter.rank=0", "adapter.rank"),
        ("adapter.rank=-4", "adapter.rank"),
        ("adapter.kind=loha adapter.rank=0", "adapter.rank"),
        ("adapter.kind=locon adapter.conv_rank=0", "adapter.conv_rank"),
        ("adapter.alpha=-1", "adapter.alpha"),
        ("adapter.dropout=2.0", "adapter.dropout"),
    ],
    ids=lambda v: v if "=" in str(v) else "",
)
def test_bad_value_is_refused_before_the_model_loads(override, says, fast_config, monkeypatch):
    import sdft.train

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the bad value was refused")

    monkeypatch.setattr(sdft.train, "load_pipeline", no_load)
    with pytest.raises(ConfigError, match=says):
        run(fast_config(*override.split()))


def test_unknown_plus_key_is_a_config_error(fast_config):
    with pytest.raises(ConfigError, match=r"data\.foo"):
        run(fast_config("+data.foo=1"))


def test_resume_auto_with_nothing_to_continue_warns(fast_config, caplog, tmp_path):
    with caplog.at_level(logging.WARNING, logger="sdft"):
        run(fast_config("resume=auto", "trainer.max_steps=1"))
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "resume=auto" in r.getMessage()]
    assert warned and str(tmp_path / "out") in warned[0].getMessage(), [r.getMessage() for r in caplog.records]


def test_kohya_toml_resolution_reaches_every_consumer(fast_config, tmp_path, caplog):
    images = tmp_path / "img" / "3_sks character"
    images.mkdir(parents=True)
    for p in sorted((EXAMPLE_SUBJECT / "face").glob("*.png"))[:2]:
        shutil.copy(p, images)
    toml = tmp_path / "data.toml"
    toml.write_text(f'[general]\nresolution = 64\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "{images}"\n')
    with caplog.at_level(logging.INFO, logger="sdft"):
        parts = prepare(
            fast_config(
                "data.resolution=512",
                f"data.kohya_toml={toml}",
                "data.instance_dir=null",
                "callbacks.fixed_noise_loss=true",
            ),
            with_logger=False,
        )
    from sdft.callbacks.fixed_noise_loss import FixedNoiseLoss

    fixed = next(c for c in parts.trainer.callbacks if isinstance(c, FixedNoiseLoss))
    assert parts.grids.resolution == 64 and fixed.resolution == 64
    assert parts.checkpoint.kohya_metadata(1, 0)["ss_resolution"] == "(64, 64)"
    assert any(str(toml) in r.getMessage() for r in caplog.records if "instance images" in r.getMessage())


def test_plus_key_is_refused_before_hydra_writes_it(tiny_cache, tmp_path):
    """`+model.token=...` stops with one line naming the key; the value is in no file (issue 20, item 9)."""
    import os
    import subprocess
    import sys

    from helpers.config import ROOT

    secret = "hf_" + "NOTaREALtokenJUSTaTEST0123"
    run_dir = tmp_path / "hydra_run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDFT_CACHE_DIR": str(tiny_cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "train.py", f"hydra.run.dir={run_dir}", f"+model.token={secret}", "trainer.max_steps=1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "model.token" in said and "Traceback" not in said, said[-2000:]
    assert secret not in said
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and secret in p.read_text(errors="replace")]
    assert not leaked, leaked
