"""Whole-run progress (issue 31 #2): one bar over all phases' optimizer steps (accumulation's batches do not count),
the epoch a field; off a terminal, a plain log line every N steps and no carriage-return redraws."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import sdft.callbacks.progress as progress
from helpers.config import FAST, ROOT
from sdft.callbacks.progress import RunProgress


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):  # 4 batches (2 optimizer steps) an epoch: epochs end mid-way through a phase
        return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=1)


def two_phases(bar_every: int = 1) -> list[RunProgress]:
    """Phase a (4 steps) then b (6 steps), 2 batches an optimizer step: the run is 10 steps of 20 batches."""
    bars = []
    for name, offset, steps in (("a", 0, 4), ("b", 4, 6)):
        bar = RunProgress(name, offset, 10, every_n_steps=bar_every)
        trainer = L.Trainer(
            max_steps=steps,
            max_epochs=-1,
            accumulate_grad_batches=2,
            callbacks=[bar],
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            accelerator="cpu",
        )
        trainer.fit(Tiny())
        bars.append(bar)
    return bars


def test_the_bar_counts_the_whole_run_in_optimizer_steps(monkeypatch, capsys):
    monkeypatch.setattr(progress, "is_terminal", lambda: True)
    shown = []
    real = RunProgress.on_train_batch_end

    def record(self, trainer, *args):
        real(self, trainer, *args)
        bar = self.train_progress_bar
        shown.append((bar.desc, bar.n, bar.total, bar.format_dict["initial"]))

    monkeypatch.setattr(RunProgress, "on_train_batch_end", record)
    two_phases()
    # one entry a batch: the count moves at each optimizer step (every 2nd batch), b goes on from a's 4
    assert [n for _, n, _, _ in shown] == [0, 1, 1, 2, 2, 3, 3, 4] + [4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10]
    assert {total for _, _, total, _ in shown} == {10}  # the run's steps, never an epoch's batches
    assert [d for d, *_ in shown] == ["a"] * 8 + ["b"] * 12
    assert {initial for d, _, _, initial in shown if d == "b"} == {4}  # b's rate and ETA count from its own start
    out = capsys.readouterr().out
    assert "b: 100%" in out and "10/10" in out and "epoch=2" in out and "it/s" in out
    assert "Epoch" not in out and "Training" not in out and "/4 [" not in out  # no per-epoch batch counts


def test_off_a_terminal_a_plain_line_every_n_steps(monkeypatch, capsys, caplog):
    monkeypatch.setattr(progress, "is_terminal", lambda: False)
    with caplog.at_level(logging.INFO, logger="sdft.callbacks.progress"):
        two_phases(bar_every=3)
    lines = [r.getMessage() for r in caplog.records if r.name == "sdft.callbacks.progress"]
    # every 3rd step of the run, and each phase's last step
    assert [line.split(" | ")[:2] for line in lines] == [
        ["step 3/10 (30%)", "phase a 3/4"],
        ["step 4/10 (40%)", "phase a 4/4"],
        ["step 6/10 (60%)", "phase b 2/6"],
        ["step 9/10 (90%)", "phase b 5/6"],
        ["step 10/10 (100%)", "phase b 6/6"],
    ]
    assert all("it/s" in line and "ETA" in line and "train/loss=" in line and "epoch " in line for line in lines)
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err  # no bar at all


@pytest.mark.slow
def test_train_py_off_a_terminal_writes_no_redraws(tmp_path):
    """The real command with its output piped (as nohup or a cluster job would): lines, no '\\r' at all."""
    overrides = [o for o in FAST if not o.startswith(("trainer.max_steps", "trainer.enable_progress_bar"))]
    command = [
        sys.executable,
        "train.py",
        *overrides,
        "trainer.accumulate_grad_batches=2",
        "callbacks.progress.every_n_steps=1",
        "callbacks.fixed_noise_loss=false",
        "logger=none",
        "phases=[{name: a, overrides: {trainer: {max_steps: 1}}}, {name: b, start: continue, "
        "overrides: {trainer: {max_steps: 2}}}]",
        f"output_dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=600)
    text = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text
    lines = [line.split(" - ", 1)[1] for line in text.splitlines() if "[sdft.callbacks.progress]" in line]
    assert [line.split(" | ")[:2] for line in lines] == [
        ["step 1/3 (33%)", "phase a 1/1"],
        ["step 2/3 (66%)", "phase b 1/2"],
        ["step 3/3 (100%)", "phase b 2/2"],
    ]
