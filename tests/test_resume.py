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
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors.torch import load_file

from helpers.config import EXAMPLE_SUBJECT, FAST, ROOT, compose_config
from helpers.processes import selected
from sdft.errors import ConfigError
from sdft.run.train import run

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


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    folder = tmp_path_factory.mktemp("subject")
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


def stop_at(path, proc: subprocess.Popen, signum: int) -> int:
    """Send `signum` once `path` (the run's progress) is written; the run's exit code."""
    wait_for(path, proc)
    proc.send_signal(signum)
    return proc.wait(120)


STOP_EVERY_5 = ["callbacks.checkpoint_every_n_steps=5"]
STOPPED = {  # the interrupted train.py runs: signal -> their overrides beyond RUN's
    signal.SIGKILL: SLOW_GRIDS,
    signal.SIGTERM: [*SLOW_GRIDS, *STOP_EVERY_5],
    signal.SIGINT: [*SLOW_GRIDS, *STOP_EVERY_5],
}


@pytest.fixture(scope="module")
def stopped(request, subject, tiny_cache, tmp_path_factory):
    """The selected tests' train.py runs, started together (the suite uses one core, CI has two) and each sent its
    signal by a watcher thread once its step-6 grid is written, while the tests train in-process meanwhile:
    {signal: (run folder, overrides to resume it with, the process, the future of its exit code)}."""
    wanted = selected(request, "test_a_stop_signal_saves_a_checkpoint_at_the_current_step", "signum")
    if selected(request, "test_sigkill_then_resume_ends_with_the_same_lora"):
        wanted.add(signal.SIGKILL)
    runs, watchers = {}, ThreadPoolExecutor(max_workers=len(STOPPED))
    for signum, extra in STOPPED.items():
        if signum in wanted:
            root = tmp_path_factory.mktemp(signal.Signals(signum).name)
            args = [*extra, f"data.class_dir={root / 'class'}"]
            hydra_dir = f"hydra.run.dir={root / 'hydra'}"  # its own: runs started in the same second would share one
            proc = start([*command(root, tiny_cache, subject, root / "run", *args), hydra_dir], tiny_cache)
            exit_code = watchers.submit(stop_at, root / "run" / "main" / "grids" / "step_000006.png", proc, signum)
            runs[signum] = root / "run", args, proc, exit_code
    yield runs
    watchers.shutdown(wait=True)


def same_lora(a, b) -> float:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    return max(float((ta[k] - tb[k]).abs().max()) for k in ta)


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_same_lora(stopped, fast_config, subject, tmp_path):
    out, args, proc, exit_code = stopped[signal.SIGKILL]  # killed past the step-4 checkpoint, before step 8
    straight = run(fast_config(*overrides(subject, tmp_path / "straight")))
    assert straight["steps"] == 12

    assert exit_code.result() == -signal.SIGKILL, proc.stderr.read()[-2000:]
    assert not (out / "summary.json").exists() and not (out / "main" / "lora").exists()
    states = sorted(p.parent.name for p in (out / "main" / "checkpoints").glob("step_*/state.ckpt"))
    assert states and states[-1] == "step_000004", states

    resumed = run(fast_config(*overrides(subject, out, *args, "resume=auto")))
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


@pytest.fixture(scope="module")
def straight_every_5(subject, tiny_cache, tmp_path_factory):
    """The uninterrupted run that both stop signals' resumed runs must match (the same run for each: trained once)."""
    root = tmp_path_factory.mktemp("straight")
    assert run(compose_config(command(root, tiny_cache, subject, root / "run", *STOP_EVERY_5)))["steps"] == 12
    return root / "run"


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_signal_saves_a_checkpoint_at_the_current_step(
    signum, code, stopped, fast_config, subject, straight_every_5
):
    out, args, proc, exit_code = stopped[signum]  # stopped once its step-6 grid was written
    rc = exit_code.result()
    assert rc == code and not (out / "summary.json").exists(), proc.stderr.read()[-2000:]
    steps = sorted(int(p.parent.name[5:]) for p in (out / "main" / "checkpoints").glob("step_*/state.ckpt"))
    assert steps and steps[-1] > 5, f"no checkpoint at the SIGTERM step: {steps}"
    resumed = run(fast_config(*overrides(subject, out, *args, "resume=auto")))
    assert resumed["steps"] == 12
    assert same_lora(out / "main" / "lora" / LORA, straight_every_5 / "main" / "lora" / LORA) <= 1e-6


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


@pytest.fixture(scope="module")
def two_phases(tiny_cache, tmp_path_factory):
    """One uninterrupted TWO run: the reference of the tests below, and (copied) the run folder they cut back.
    Returns its folder, its summary and the class_dir override that every run of that config must share."""
    root = tmp_path_factory.mktemp("two_phases")
    class_dir = f"data.class_dir={root / 'class'}"
    summary = run(
        compose_config(FAST + [f"model.cache_dir={tiny_cache}", class_dir, *TWO, f"output_dir={root / 'run'}"])
    )
    return root / "run", summary, class_dir


def test_resume_in_the_middle_of_phase_two(fast_config, two_phases, tmp_path):
    straight_dir, straight, class_dir = two_phases
    out = tmp_path / "cut"
    shutil.copytree(straight_dir, out)  # a finished run of the same config
    cut_back(out, 2, "body")  # what a SIGKILL after body's step-2 checkpoint leaves
    face_before = (out / "face" / "lora" / LORA).read_bytes()
    resumed = run(fast_config(*TWO, class_dir, f"output_dir={out}", "resume=auto"))
    assert [p["steps"] for p in resumed["phases"]] == [3, 6]
    assert (out / "face" / "lora" / LORA).read_bytes() == face_before, "the finished face phase was trained again"
    for phase in ("face", "body"):
        assert same_lora(out / phase / "lora" / LORA, straight_dir / phase / "lora" / LORA) <= 1e-6
    assert json.loads((out / "summary.json").read_text())["phases"][1]["steps"] == 6
    assert straight["phases"][1]["steps"] == 6


def test_resume_refuses_a_run_with_other_settings(fast_config, two_phases, tmp_path):
    straight_dir, _, class_dir = two_phases
    out = tmp_path / "a"
    shutil.copytree(straight_dir, out)  # a run of TWO ...
    (out / "summary.json").unlink()  # ... left unfinished
    with pytest.raises(ConfigError, match=r"other values of \['phases'\]"):
        run(fast_config(*TWO, class_dir, f"output_dir={out}", "resume=auto", "phases.1.overrides.adapter.rank=4"))
    with pytest.raises(ConfigError, match="not a run folder"):
        run(fast_config(*TWO, f"output_dir={tmp_path / 'b'}", f"resume={tmp_path / 'nowhere'}"))


def test_resume_auto_without_anything_to_resume_starts_fresh(fast_config, tmp_path):
    summary = run(fast_config("resume=auto", "trainer.max_steps=2"))
    assert summary["steps"] == 2
    state = torch.load(tmp_path / "out" / "main" / "final_state.ckpt", weights_only=True)
    trained = [k for k in state["state_dict"]]
    assert trained and all("lora_" in k for k in trained), "the checkpoint should hold only the trained LoRA weights"
