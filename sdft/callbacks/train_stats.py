"""Throughput and memory while training: `perf/images_per_sec` (also on the progress bar as img/s) and
`perf/peak_memory_gb` every `log_every_n_steps`, plus run totals for summary.json.

Measured over whole log intervals with the wall clock and no device sync, so it costs nothing per step; images count
instance and class samples. Peak memory: CUDA's max allocated on a GPU, the process's peak RSS on the CPU.
"""

from __future__ import annotations

import resource
import sys
import time

import lightning as L
import torch


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


class TrainStats(L.Callback):
    def __init__(self):
        self.images = 0  # since fit start (this process)
        self.seconds = 0.0
        self.peak_gb = 0.0
        self._interval_images = 0
        self._interval_start: float | None = None
        self._rate: float | None = None
        self._last_step = -1

    @property
    def images_per_sec(self) -> float | None:
        return self.images / self.seconds if self.seconds else None

    def on_train_start(self, trainer, module) -> None:
        self._interval_start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._interval_images += int(batch["is_prior"].numel())
        step, every = trainer.global_step, max(trainer.log_every_n_steps, 1)
        if step % every == 0 and step != self._last_step:  # a new interval: measure it (no device sync)
            self._last_step = step
            now = time.perf_counter()
            elapsed = now - self._interval_start
            self._rate = self._interval_images / elapsed if elapsed > 0 else None
            self.images += self._interval_images
            self.seconds += elapsed
            self._interval_images, self._interval_start = 0, now
            self.peak_gb = max(self.peak_gb, peak_memory_gb(module.device))
        if self._rate is not None:  # plain floats: logging them every batch costs nothing; loggers write at intervals
            module.log("img/s", self._rate, prog_bar=True, logger=False, batch_size=1)
            module.log_dict({"perf/images_per_sec": self._rate, "perf/peak_memory_gb": self.peak_gb}, batch_size=1)

    def on_train_end(self, trainer, module) -> None:
        self.peak_gb = max(self.peak_gb, peak_memory_gb(module.device))

    def summary(self) -> dict:
        rate = self.images_per_sec
        return {"images_per_sec": round(rate, 3) if rate else None, "peak_memory_gb": round(self.peak_gb, 3)}
