"""Sample now / save now / stop for a running run, through files in its folder (`sdft run sample|save|stop RUN_DIR`,
the UI's buttons).

While a phase trains, `<run>/control/running.json` names the process. A request is a file
`<run>/control/<time>-<action>.request`; between optimizer steps `RunControls` reads the requests, in order: `sample`
writes a validation grid at the current step (`grids/step_<N>_now.png`), `save` a checkpoint at the current step
(`checkpoints/step_<N>/`, LoRA files + resumable state, as every N steps), `stop` takes the graceful stop's path
(sdft/callbacks/graceful_stop.py: a checkpoint at the end of this batch, then exit 143) that `resume=auto`
continues. Each request is answered by `<same name>.done` (JSON: action, step, result) and removed.

Why files rather than signals: they work the same from the UI, a shell or another machine's shell on a shared disk,
carry which action was asked, and need no process id; a listing of one small folder per step costs nothing.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

import lightning as L

from sdft.atomic import write_text
from sdft.errors import ConfigError

log = logging.getLogger(__name__)
ACTIONS = ("sample", "save", "stop")
CONTROL_DIR = "control"
RUNNING = "running.json"


def control_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CONTROL_DIR


def running(run_dir: str | Path) -> dict | None:
    """The running.json of a run whose training process is alive (on this machine, checked by its pid), else None."""
    path = control_dir(run_dir) / RUNNING
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            return None  # killed (kill -9, power cut): a stale marker
        except PermissionError:
            pass  # alive, another user's
    return info


def request(run_dir: str | Path, action: str) -> Path:
    """Ask the run training in `run_dir` for `action`; returns the request file (its answer: `.done` beside it)."""
    if action not in ACTIONS:
        raise ConfigError(f"unknown run action {action!r}; one of {', '.join(ACTIONS)}.")
    if not Path(run_dir).is_dir():
        raise ConfigError(f"{run_dir}: no such run folder.")
    if running(run_dir) is None:
        raise ConfigError(
            f"{run_dir}: no training is running there now (no live {CONTROL_DIR}/{RUNNING}: finished, stopped, "
            "between phases, or not a run folder). Continue a stopped run with `python train.py ... resume=auto`."
        )
    path = control_dir(run_dir) / f"{time.time_ns()}-{action}.request"
    write_text(path, action)
    return path


def answer(request_path: Path) -> dict | None:
    """The run's answer to a request (action, step, result), once it has been handled."""
    done = request_path.with_suffix(".done")
    try:
        return json.loads(done.read_text())
    except (OSError, ValueError):
        return None


class RunControls(L.Callback):
    """List it just before GracefulStop (whose batch-end stop then follows a `stop` request at once)."""

    def __init__(self, run_dir: str | Path, phase: str, checkpoint, grids, graceful_stop):
        self.dir = control_dir(run_dir)
        self.phase = phase
        self.checkpoint, self.grids, self.graceful_stop = checkpoint, grids, graceful_stop
        self._last_step: int | None = None

    def _pending(self) -> list[Path]:
        try:
            return sorted(self.dir.glob("*.request"))
        except OSError:
            return []

    def _reply(self, path: Path, action: str, step: int, result: str) -> None:
        write_text(path.with_suffix(".done"), json.dumps({"action": action, "step": step, "result": result}))
        path.unlink(missing_ok=True)

    def on_train_start(self, trainer, module) -> None:
        self._last_step = trainer.global_step
        if not trainer.is_global_zero:
            return
        for path in self._pending():  # asked of an earlier process, or after the previous phase's last step
            self._reply(path, path.stem.split("-", 1)[-1], trainer.global_step, "dropped: asked before this start")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "phase": self.phase, "started": time.time()}
        try:
            write_text(self.dir / RUNNING, json.dumps(info))
        except OSError as err:  # a read-only or full disk must not stop training; only the controls are lost
            log.warning("sdft run sample|save|stop unavailable for this run: cannot write %s (%s)", self.dir, err)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_step:  # inside a gradient-accumulation window: only between optimizer steps
            return
        self._last_step = step
        pending = self._pending() if trainer.is_global_zero else []
        if trainer.world_size > 1:  # every rank acts together (a checkpoint is collective)
            pending = trainer.strategy.broadcast(pending, src=0)
        for path in pending:
            action = path.stem.split("-", 1)[-1]
            result = self._act(trainer, module, action, step)
            if trainer.is_global_zero:
                log.info("sdft run %s at step %d: %s", action, step, result)
                self._reply(path, action, step, result)

    def _act(self, trainer, module, action: str, step: int) -> str:
        if action == "sample":
            path = self.grids.write(trainer, module, f"step_{step:06d}_now") if trainer.is_global_zero else None
            return f"grid {path}" if path else "no grid (callbacks.validation_seeds is empty)"
        if action == "save":
            return f"checkpoint {self.checkpoint.checkpoint(trainer, module)}"
        if action == "stop":
            self.graceful_stop.request("sdft run stop")
            return "stopping after this step with a checkpoint; continue with resume=auto"
        return f"unknown action {action!r}: ignored"

    def _finish(self, trainer) -> None:
        if trainer.is_global_zero:
            (self.dir / RUNNING).unlink(missing_ok=True)

    def on_train_end(self, trainer, module) -> None:
        self._finish(trainer)

    def on_exception(self, trainer, module, exception) -> None:
        self._finish(trainer)
