"""Resume: a run killed (SIGKILL) or stopped (SIGTERM) at some step continues with resume=auto and ends with the same
LoRA as a run that was never interrupted; finished phases are rebuilt, not retrained; retention keeps the last K."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from helpers.config import EXAMPLE_SUBJECT, FAST, ROOT
from sdft.errors import ConfigError
from sdft.train import run

LORA = "pytorch_lora_weights.safetensors"
# 3 instance images (an epoch is 3 batches: 12 steps cross 4 epochs), prior preservation, a grid at every step (so
# sampling runs between steps: the batches' randomness must not depend on it), checkpoints every 4 steps
RUN = [
    "trainer.max_steps=12",
    "callbacks.checkpoint_every_n_steps=4",
    "callbacks.keep_last_k=2",
    "prior=default",
    "prior.num_class_images=2",
    "prior.generation_steps=2",
    "optim.lr=1e-2",
]
SLOW_GRIDS = ["callbacks.validation_every_n_steps=1", "callbacks.validation_steps=2"]


@pytest.fixture
def subject(tmp_path):
    folder = tmp_path / "subject"
    folder.mkdir()
    for name in ("face_00", "face_01", "body_00"):
        shutil.copy(EXAMPLE_SUBJECT / ("face" if "face" in name else "body") / f"{name}.png", folder)
    return folder


def overrides(subject, out, *extra) -> list[str]:
    """The run's overrides beyond fast_config's (in-process runs) ..."""
    return [
        f"output_dir={out}",
        f"data.instance_dir={subject}",
        "data.instance_prompt=photo of sks character",
        "data.class_prompt=photo of a character",
        *RUN,
        *extra,
    ]


def command(tmp_path, tiny_cache, subject, out, *extra) -> list[str]:
    """... and the same run as train.py's command line (subprocess runs)."""
    return FAST + [
        f"model.cache_dir={tiny_cache}",
        f"data.class_dir={tmp_path / 'class'}",
        *overrides(subject, out, *extra),
    ]


def start(args: list[str], tiny_cache) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDFT_CACHE_DIR": str(tiny_cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training ended (rc {proc.returncode}) before {path} appeared:\n{proc.stderr.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.02)


def same_lora(a, b) -> float:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    return max(float((ta[k] - tb[k]).abs().max()) for k in ta)


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_same_lora(fast_config, tiny_cache, subject, tmp_path):
    straight = run(fast_config(*overrides(subject, tmp_path / "straight")))
    assert straight["steps"] == 12

    out = tmp_path / "killed"
    proc = start(command(tmp_path, tiny_cache, subject, out, *SLOW_GRIDS), tiny_cache)
    wait_for(out / "main" / "grids" / "step_000006.png", proc)  # past the step-4 checkpoint, before step 8
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    assert not (out / "summary.json").exists() and not (out / "main" / "lora").exists()
    states = sorted(p.parent.name for p in (out / "main" / "checkpoints").glob("step_*/state.ckpt"))
    assert states and states[-1] == "step_000004", states

    resumed = run(fast_config(*overrides(subject, out, *SLOW_GRIDS, "resume=auto")))
    assert resumed["steps"] == 12
    diff = same_lora(out / "main" / "lora" / LORA, tmp_path / "straight" / "main" / "lora" / LORA)
    assert diff <= 1e-6, f"resumed LoRA differs from the uninterrupted one by {diff}"
    moved = same_lora(
        out / "main" / "checkpoints" / "step_000004" / "sdft-step000004.safetensors",
        out / "main" / "lora" / "sdft.safetensors",
    )
    assert moved > 1e-4, "steps 5-12 changed nothing: the comparison above proves nothing"
    # retention: last 2 step checkpoints, each with its resumable state
    assert sorted(p.name for p in (out / "main" / "checkpoints").iterdir()) == ["step_000004", "step_000008"]
    assert (
        resumed["final_metrics"]["val/fixed_noise_loss_start"]
        == straight["final_metrics"]["val/fixed_noise_loss_start"]
    )


def cut_back(run_dir, step: int, phase: str = "main") -> None:
    """Leave `run_dir` as a SIGKILL right after the step-`step` checkpoint would: later checkpoints and results gone."""
    for p in [
        run_dir / "summary.json",
        run_dir / phase / "summary.json",
        run_dir / phase / "final_state.ckpt",
        run_dir / phase / "lora",
        *(run_dir / phase / "checkpoints").glob("step_*"),
    ]:
        if p.name.startswith("step_") and int(p.name[5:]) <= step:
            continue
        if p.exists():
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def test_resume_from_the_checkpoint_of_any_step_is_exact(fast_config, subject, tmp_path):
    """Mid-epoch and epoch-end checkpoints (an epoch here is 3 batches)."""
    every = ["callbacks.checkpoint_every_n_steps=1", "callbacks.keep_last_k=20"]
    run(fast_config(*overrides(subject, tmp_path / "straight", *every)))
    for step in (2, 3, 7):
        out = tmp_path / f"cut{step}"
        shutil.copytree(tmp_path / "straight", out)
        cut_back(out, step)
        assert not (out / "main" / "lora").exists()
        assert run(fast_config(*overrides(subject, out, *every, "resume=auto")))["steps"] == 12
        diff = same_lora(out / "main" / "lora" / LORA, tmp_path / "straight" / "main" / "lora" / LORA)
        assert diff <= 1e-6, f"resumed from step {step}: differs by {diff}"


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_signal_saves_a_checkpoint_at_the_current_step(signum, code, fast_config, tiny_cache, subject, tmp_path):
    out = tmp_path / "stopped"
    args = [*SLOW_GRIDS, "callbacks.checkpoint_every_n_steps=5"]
    proc = start(command(tmp_path, tiny_cache, subject, out, *args), tiny_cache)
    wait_for(out / "main" / "grids" / "step_000006.png", proc)
    proc.send_signal(signum)
    rc = proc.wait(120)
    assert rc == code and not (out / "summary.json").exists(), proc.stderr.read()[-2000:]
    steps = sorted(int(p.parent.name[5:]) for p in (out / "main" / "checkpoints").glob("step_*/state.ckpt"))
    assert steps and steps[-1] > 5, f"no checkpoint at the SIGTERM step: {steps}"
    resumed = run(fast_config(*overrides(subject, out, *args, "resume=auto")))
    assert resumed["steps"] == 12
    run(fast_config(*overrides(subject, tmp_path / "straight", "callbacks.checkpoint_every_n_steps=5")))
    assert same_lora(out / "main" / "lora" / LORA, tmp_path / "straight" / "main" / "lora" / LORA) <= 1e-6


TWO = [
    "+experiment=dual_phase",
    "model=tiny",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "prior=none",
    "callbacks.validation_seeds=[]",
    "phases.0.overrides.trainer.max_steps=3",
    "phases.1.overrides.trainer.max_steps=6",
    "callbacks.checkpoint_every_n_steps=2",
    "phases.0.overrides.optim.lr=1e-2",
    "phases.1.overrides.optim.lr=1e-2",
]


def test_resume_in_the_middle_of_phase_two(fast_config, tmp_path):
    straight = run(fast_config(*TWO, f"output_dir={tmp_path / 'straight'}"))
    out = tmp_path / "cut"
    run(fast_config(*TWO, f"output_dir={out}"))
    cut_back(out, 2, "body")  # what a SIGKILL after body's step-2 checkpoint leaves
    face_before = (out / "face" / "lora" / LORA).read_bytes()
    resumed = run(fast_config(*TWO, f"output_dir={out}", "resume=auto"))
    assert [p["steps"] for p in resumed["phases"]] == [3, 6]
    assert (out / "face" / "lora" / LORA).read_bytes() == face_before, "the finished face phase was trained again"
    for phase in ("face", "body"):
        assert same_lora(out / phase / "lora" / LORA, tmp_path / "straight" / phase / "lora" / LORA) <= 1e-6
    assert json.loads((out / "summary.json").read_text())["phases"][1]["steps"] == 6
    assert straight["phases"][1]["steps"] == 6


def test_resume_refuses_a_run_with_other_settings(fast_config, tmp_path):
    out = tmp_path / "a"
    run(fast_config(*TWO, f"output_dir={out}"))
    (out / "summary.json").unlink()
    with pytest.raises(ConfigError, match=r"other values of \['phases'\]"):
        run(fast_config(*TWO, f"output_dir={out}", "resume=auto", "phases.1.overrides.adapter.rank=4"))
    with pytest.raises(ConfigError, match="not a run folder"):
        run(fast_config(*TWO, f"output_dir={tmp_path / 'b'}", f"resume={tmp_path / 'nowhere'}"))


def test_resume_auto_without_anything_to_resume_starts_fresh(fast_config, tmp_path):
    summary = run(fast_config("resume=auto", "trainer.max_steps=2"))
    assert summary["steps"] == 2
    state = torch.load(tmp_path / "out" / "main" / "final_state.ckpt", weights_only=True)
    trained = [k for k in state["state_dict"]]
    assert trained and all("lora_" in k for k in trained), "the checkpoint should hold only the trained LoRA weights"
