"""SIGTERM or Ctrl-C: finish the current batch, save a resumable checkpoint, stop (a second Ctrl-C stops at once).

Why not Lightning's own SIGTERM handling: it raises between loop stages, where its loop counters may already be past
an epoch's end; a checkpoint taken there resumes with a shortened epoch. Here the stop happens at the end of a batch,
the same point as every regular checkpoint, so `resume=auto` continues exactly (tests/test_resume.py).

Before the first batch (checks, model load, class images, the start grid and fixed-noise loss) `stop_before_training`
holds the signals: nothing has been trained since the last checkpoint, so a signal stops at once with exit 143 / 130 and
says so (tests/test_stop_at_start.py). It is installed before Lightning's own SIGTERM handler, which would otherwise
note the signal and end the run after one batch with exit 0 and no checkpoint.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

import lightning as L

from sdft.errors import TrainingStopped

log = logging.getLogger(__name__)
SIGNALS = {signal.SIGTERM: ("SIGTERM", 143), signal.SIGINT: ("Ctrl-C", 130)}


def _stop_now(signum, frame) -> None:
    name, code = SIGNALS[signum]
    raise TrainingStopped(
        f"Stopped by {name} before a training step: nothing trained yet since the last checkpoint "
        "(none in a new run), so nothing to save. Run the same command with resume=auto to continue "
        "(class images already made are kept).",
        code,
    )


@contextmanager
def stop_before_training():
    """While open (main thread only), SIGTERM / Ctrl-C raise TrainingStopped at once; GracefulStop takes over at the
    first batch. Lightning's handler, installed by fit(), calls this one after its own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _stop_now) for s in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class GracefulStop(L.Callback):
    """List it last: its batch-end check runs after every other callback's."""

    def __init__(self, checkpoint):
        self.checkpoint = checkpoint  # a LoraCheckpoint
        self.requested: int | str | None = None  # the signal, or who asked (`request`)
        self._previous: dict = {}
        self._asked = ("a signal on another rank", 143)

    def request(self, by: str, exit_code: int = 143) -> None:
        """Stop as a SIGTERM would, asked for another way (`sdft run stop`: sdft/callbacks/controls.py)."""
        self.requested = by
        self._asked = (by, exit_code)

    def _handle(self, signum, frame) -> None:
        if self.requested == signal.SIGINT and signum == signal.SIGINT:
            self._restore()
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, no checkpoint
        self.requested = signum
        log.warning(
            "%s: stopping after this batch, with a checkpoint (Ctrl-C again to stop at once).", SIGNALS[signum][0]
        )

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_start(self, trainer, module) -> None:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        stop = self.requested is not None
        if trainer.world_size > 1:  # every rank stops together (saving a checkpoint is collective)
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        name, code = SIGNALS.get(self.requested, self._asked)
        path = self.checkpoint.checkpoint(trainer, module)
        self._restore()
        raise TrainingStopped(
            f"Stopped by {name} at step {trainer.global_step}; saved {path}. "
            "Run the same command with resume=auto to continue.",
            code,
        )

    def on_train_end(self, trainer, module) -> None:
        self._restore()

    def on_exception(self, trainer, module, exception) -> None:
        self._restore()
