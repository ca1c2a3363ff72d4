"""Whole-run progress: one bar over the run's optimizer steps (all phases), or plain log lines when stdout is no
terminal.

Lightning's TQDMProgressBar counts the batches of the current epoch ("Epoch 47: 2/4"); `RunProgress` subclasses it
and counts the run instead: global step of max steps summed over the phases (a phase starts at the steps of the
phases before it), the phase as the bar's name, ETA and it/s from tqdm (one "it" = one optimizer step, so gradient
accumulation's batches do not count), the epoch as a field. When stdout is not a terminal (nohup, a cluster job, CI,
the UI's subprocess) no bar is drawn: every `callbacks.progress.every_n_steps` steps one plain log line says the same,
and the libraries' loading bars are switched off (`quiet_library_bars`), so the log holds no carriage-return redraws.
"""

from __future__ import annotations

import logging
import sys
import time

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from tqdm import tqdm

log = logging.getLogger(__name__)


def is_terminal() -> bool:
    return sys.stdout.isatty()


def quiet_library_bars() -> None:
    """No diffusers / transformers / huggingface_hub progress bars when stdout is not a terminal."""
    if is_terminal():
        return
    import diffusers
    import huggingface_hub
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


def format_line(phase: str, run_step: int, total: int, step: int, max_steps: int, epoch: int, rate, metrics) -> str:
    """The plain line: `step 40/400 (10%) | phase face 40/200 | epoch 9 | 1.52 it/s | ETA 03:56 | train/loss=0.12`."""
    eta = tqdm.format_interval((total - run_step) / rate) if rate else "?"
    fields = [
        f"step {run_step}/{total} ({100 * run_step // max(total, 1)}%)",
        f"phase {phase} {step}/{max_steps}",
        f"epoch {epoch}",
        f"{rate:.3g} it/s" if rate else "? it/s",
        f"ETA {eta}",
    ]
    fields += [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()]
    return " | ".join(fields)


class RunProgress(TQDMProgressBar):
    """`offset`: the optimizer steps of the phases before this one; `total`: the run's steps (every phase's max_steps)."""

    def __init__(self, phase: str, offset: int, total: int, every_n_steps: int = 10, refresh_rate: int = 1):
        super().__init__(refresh_rate=refresh_rate)
        self.phase, self.offset, self.total = phase, offset, total
        self.every_n_steps = every_n_steps
        self.terminal = True
        self._last_step: int | None = None
        self._start: tuple[float, int] | None = None  # (time, step) when this phase's training started

    def init_train_tqdm(self):
        """Lightning's train bar, named after the phase and counting the run from where this phase starts (tqdm's
        rate and ETA count from `initial`; a resumed phase starts at its checkpoint's step)."""
        return Tqdm(
            desc=self.phase,
            total=self.total,
            initial=self.offset + self.trainer.global_step,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def on_train_start(self, trainer, module) -> None:
        self.terminal = is_terminal()
        if not self.terminal:
            self.disable()  # no bar (nor Lightning's other bars) at all: plain lines instead
        super().on_train_start(trainer, module)
        self._last_step = trainer.global_step
        self._start = (time.perf_counter(), trainer.global_step)

    def on_train_epoch_start(self, trainer, *_) -> None:
        pass  # one bar for the run: never reset per epoch (Lightning's bar does)

    def get_metrics(self, trainer, module) -> dict:
        metrics = super().get_metrics(trainer, module)
        metrics.pop("v_num", None)
        return {**metrics, "epoch": trainer.current_epoch}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_step:  # inside a gradient-accumulation window: no optimizer step yet
            return
        self._last_step = step
        run_step = self.offset + step
        last = step >= trainer.max_steps
        if self.terminal:
            bar = self.train_progress_bar
            if bar is not None and not bar.disable and (step % self.refresh_rate == 0 or last):
                bar.n = run_step
                bar.set_postfix(self.get_metrics(trainer, module), refresh=False)
                bar.refresh()
            return
        if not trainer.is_global_zero or self.every_n_steps <= 0:
            return
        if run_step % self.every_n_steps and not last:
            return
        started, first = self._start
        elapsed = time.perf_counter() - started
        rate = (step - first) / elapsed if elapsed > 0 and step > first else None
        metrics = {k: float(v) for k, v in trainer.progress_bar_metrics.items()}
        line = format_line(
            self.phase, run_step, self.total, step, trainer.max_steps, trainer.current_epoch, rate, metrics
        )
        log.info(line)
