"""What makes a resumed run end exactly where an uninterrupted one would.

Lightning's checkpoint restores weights, optimizer, lr schedule, step and epoch. Two things it cannot restore here:
the position inside an epoch of our batch plan (a plain sampler has no state) and the random state of the step
(noise, timesteps, VAE sampling, LoRA dropout). So:
- every batch carries its plan coordinates (epoch, number); this callback keeps the last batch that completed an
  optimizer step and saves it in the checkpoint; on resume the sampler skips up to it (`ResumePoint`);
- the global torch RNG is reseeded from (seed, epoch, number) before every batch, so a batch's randomness does not
  depend on what ran before it (validation grids, class-image generation, a restart).
Lightning's own mid-epoch resume (it saves a loader's `state_dict`, issue 19) is not used: it needs torchdata's
StatefulDataLoader (another dependency), and the bucket sampler would still have to implement that state for its plan;
the (epoch, number) coordinates kept here are that state, with the plain DataLoader and any num_workers.
"""

from __future__ import annotations

import random

import lightning as L
import torch


class ResumePoint:
    """The last trained batch (epoch, number) of a restored checkpoint, handed from the callback to the sampler."""

    def __init__(self):
        self.done: tuple[int, int] | None = None

    def take(self) -> tuple[int, int] | None:
        """Once: the sampler consumes it at the first epoch it plans after the restore."""
        done, self.done = self.done, None
        return done


def batch_seed(seed: int, epoch: int, number: int) -> int:
    return random.Random(f"{seed}/{epoch}/{number}/step").getrandbits(62)


class TrainingState(L.Callback):
    """Per-batch RNG seeding and the resume point; list it before the checkpoint callback."""

    def __init__(self, seed: int, resume: ResumePoint):
        self.seed, self.resume = seed, resume
        self.completed: tuple[int, int] | None = None  # last batch whose optimizer step is done
        self._current: tuple[int, int] | None = None
        self._step_before = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        epoch, number = (int(v) for v in batch["plan"])  # plain ints (sdft/data/dataset.py): no device sync
        self._current, self._step_before = (epoch, number), trainer.global_step
        torch.manual_seed(batch_seed(self.seed, epoch, number))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > self._step_before:  # with gradient accumulation only the step's last batch counts
            self.completed = self._current

    def state_dict(self) -> dict:
        return {"completed": list(self.completed) if self.completed else None}

    def load_state_dict(self, state: dict) -> None:
        done = state.get("completed")
        self.completed = tuple(done) if done else None
        self.resume.done = self.completed
