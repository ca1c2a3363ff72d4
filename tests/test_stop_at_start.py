"""SIGTERM during the start-of-training work (class images, the start grid, the start fixed-noise loss) ends the run
with exit 143 and a clear "nothing trained yet" line, never a silent exit 0 (issue 20, item 1).

The signal is sent deterministically: a wrapper patches the stage's function to SIGTERM its own process on entry.
The four stages' runs are independent processes, started together by one fixture (helpers/processes.py)."""

from __future__ import annotations

import os
import sys

import pytest

from helpers.config import EXAMPLE_SUBJECT, FAST, ROOT
from helpers.processes import Concurrent, selected

STAGES = {  # stage -> (module, attribute patched to send SIGTERM on entry)
    "class_images": ("sdft.data.class_images", "ensure_class_images"),
    "start_grid": ("sdft.callbacks.validation_grid", "ValidationGrid.render"),
    "start_loss": ("sdft.callbacks.fixed_noise_loss", "FixedNoiseLoss.measure"),
    "first_batch": ("sdft.training.module", "DreamBoothModule.training_step"),
}

WRAPPER = """
import importlib, os, runpy, signal, sys
module, attr = sys.argv[1], sys.argv[2]
owner = importlib.import_module(module)
*path, name = attr.split(".")
for part in path:
    owner = getattr(owner, part)
original = getattr(owner, name)
sent = []
def hooked(*args, **kwargs):
    if not sent:
        sent.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
    return original(*args, **kwargs)
setattr(owner, name, hooked)
sys.argv = ["train.py", *sys.argv[3:]]
runpy.run_path("train.py", run_name="__main__")
"""


def command(stage: str, run_dir, tiny_cache) -> list[str]:
    """The wrapper's command line: train.py with FAST settings, prior preservation and every start-of-run stage on."""
    args = FAST + [
        f"model.cache_dir={tiny_cache}",
        f"output_dir={run_dir / 'run'}",
        f"hydra.run.dir={run_dir / 'hydra'}",
        f"data.class_dir={run_dir / 'class'}",
        f"data.instance_dir={EXAMPLE_SUBJECT / 'face'}",
        "data.instance_prompt=photo of sks character",
        "data.class_prompt=photo of a character",
        "prior=default",
        "callbacks.validation_at_start=true",
        "callbacks.fixed_noise_loss=true",
        "trainer.max_steps=3",
    ]
    return [sys.executable, "-c", WRAPPER, *STAGES[stage], *args]


@pytest.fixture(scope="module")
def stopped_runs(request, tiny_cache, tmp_path_factory):
    """Every selected stage's run, started together (helpers/processes.py): the runs and {stage: its folder}."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDFT_CACHE_DIR": str(tiny_cache), "HF_HUB_OFFLINE": "1"}
    runs, dirs = Concurrent(), {}
    for stage in STAGES:  # in order, so the stages that are quickest to reach finish first
        if stage in selected(request, "test_sigterm_at_any_start_stage_exits_143", "stage"):
            dirs[stage] = tmp_path_factory.mktemp(stage)
            runs.start(stage, command(stage, dirs[stage], tiny_cache), cwd=ROOT, env=env, timeout=600)
    yield runs, dirs
    runs.close()


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_sigterm_at_any_start_stage_exits_143(stage, stopped_runs):
    runs, dirs = stopped_runs
    proc, out = runs.result(stage), dirs[stage] / "run"
    said = proc.stdout + proc.stderr  # Hydra's console log goes to stdout
    tail = said[-3000:]
    assert proc.returncode == 143, f"exit {proc.returncode}:\n{tail}"
    assert not (out / "summary.json").exists() and not (out / "main" / "lora").exists()
    states = sorted((out / "main" / "checkpoints").glob("step_*/state.ckpt"))
    if stage == "first_batch":  # the stop comes at the end of the first batch: a checkpoint to resume from
        assert [p.parent.name for p in states] == ["step_000001"], tail
    else:
        assert not states and "nothing trained yet" in said, tail
    assert "Traceback" not in said, tail
