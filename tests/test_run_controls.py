"""`sdft run sample|save|stop RUN_DIR` (issue 31 #3): a request file in the run folder, read between optimizer steps:
a grid and a checkpoint at the current step, and the graceful stop that `resume=auto` continues."""

from __future__ import annotations

import json
import os
import socket
import threading

import lightning as L
import pytest

from sdft.callbacks import controls
from sdft.cli import build_parser
from sdft.errors import ConfigError, TrainingStopped
from sdft.run.train import fit
from helpers.wiring import prepare_for_test


class Ask(L.Callback):
    """Asks the running run for actions at given steps, as `sdft run` would from another shell."""

    def __init__(self, run_dir, plan: dict[int, list[str]]):
        self.run_dir, self.plan, self.asked = run_dir, plan, []

    def on_train_batch_end(self, trainer, *_):
        for action in self.plan.pop(trainer.global_step, []):
            self.asked.append(controls.request(self.run_dir, action))


def test_sample_save_and_stop_between_steps(fast_config, tmp_path):
    cfg = fast_config("trainer.max_steps=4", "trainer.accumulate_grad_batches=2", "callbacks.fixed_noise_loss=false")
    parts = prepare_for_test(cfg)
    run_dir, phase_dir = parts.out_dir, parts.out_dir / "main"
    ask = Ask(run_dir, {1: ["sample", "save"], 2: ["stop"]})
    parts.trainer.callbacks.insert(0, ask)  # before RunControls: asked and read at the same step
    with pytest.raises(TrainingStopped, match="Stopped by sdft run stop at step 2") as stopped:
        fit(parts)
    assert stopped.value.exit_code == 143
    assert (phase_dir / "grids" / "step_000001_now.png").is_file()
    assert (phase_dir / "checkpoints" / "step_000001" / "state.ckpt").is_file()
    assert (phase_dir / "checkpoints" / "step_000001" / "pytorch_lora_weights.safetensors").is_file()
    assert (phase_dir / "checkpoints" / "step_000002" / "state.ckpt").is_file()  # the stop's checkpoint
    answers = [controls.answer(path) for path in ask.asked]
    assert [(a["action"], a["step"]) for a in answers] == [("sample", 1), ("save", 1), ("stop", 2)]
    assert "step_000001_now.png" in answers[0]["result"] and "step_000001" in answers[1]["result"]
    assert not list((run_dir / "control").glob("*.request")) and not (run_dir / "control" / "running.json").exists()
    with pytest.raises(ConfigError, match="no training is running"):  # stopped: nothing to ask any more
        controls.request(run_dir, "sample")


def test_a_stale_marker_or_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such run folder"):
        controls.request(tmp_path / "missing", "save")
    (tmp_path / "control").mkdir()
    pid = os.fork() if hasattr(os, "fork") else None
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)  # a process that has ended: its marker is stale (a kill -9'd run)
    marker = {"pid": pid, "host": socket.gethostname(), "phase": "main", "started": 0}
    (tmp_path / "control" / "running.json").write_text(json.dumps(marker))
    with pytest.raises(ConfigError, match="no training is running"):
        controls.request(tmp_path, "stop")
    with pytest.raises(ConfigError, match="unknown run action"):
        controls.request(tmp_path, "pause")


def test_the_command_waits_for_the_run_and_prints_its_answer(tmp_path, capsys):
    (tmp_path / "control").mkdir()
    marker = {"pid": os.getpid(), "host": socket.gethostname(), "phase": "main", "started": 0}
    (tmp_path / "control" / "running.json").write_text(json.dumps(marker))

    def run_side():  # what RunControls does at the next step
        for _ in range(200):
            pending = list((tmp_path / "control").glob("*-save.request"))
            if pending:
                done = {"action": "save", "step": 7, "result": "checkpoint x/step_000007"}
                pending[0].with_suffix(".done").write_text(json.dumps(done))
                return
            threading.Event().wait(0.05)

    side = threading.Thread(target=run_side)
    side.start()
    args = build_parser().parse_args(["run", "save", str(tmp_path), "--timeout", "30"])
    assert args.func(args) == 0
    side.join()
    assert capsys.readouterr().out.strip() == "save at step 7: checkpoint x/step_000007"
    args = build_parser().parse_args(["run", "sample", str(tmp_path), "--timeout", "0.3"])
    assert args.func(args) == 1  # nobody answers: says so, the request stays for the run's next step
    assert "no answer" in capsys.readouterr().out and list((tmp_path / "control").glob("*-sample.request"))
