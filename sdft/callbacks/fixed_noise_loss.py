"""A loss that is comparable across steps and runs: the diffusion loss on the instance images (or the held-out ones,
data.validation_split) at fixed noise and fixed timesteps (seeded), so only the weights change between measurements.

Not Lightning's validation loop (`validation_step` + `val_check_interval`, issue 19), on purpose: that loop counts
batches, not optimizer steps (with gradient accumulation they differ), cannot measure before the first step (the
`*_start` value in summary.json), and needs a val DataLoader and hooks between training batches; this callback only
uses its own seeded generator, so the trained batches' randomness, and with it exact resume, is untouched.
"""

from __future__ import annotations

import lightning as L

from sdft.training.fixed_noise import FixedNoiseMeter


class FixedNoiseLoss(L.Callback):
    """Logs `val/fixed_noise_loss` before training, every N steps (0: never in between) and at the end;
    `self.first` and `self.last` keep the first and last values for the run summary."""

    def __init__(self, every_n_steps: int, resolution: int, max_images: int = 8, seed: int = 1234, examples=None):
        self.every_n_steps, self.resolution, self.max_images, self.seed = every_n_steps, resolution, max_images, seed
        self.examples = examples  # held-out images; None: the first max_images training images
        self.first: float | None = None
        self.last: float | None = None
        self.meter = FixedNoiseMeter(resolution, max_images, seed)
        self._last_step = -1

    def measure(self, trainer: L.Trainer, module) -> float:
        examples = self.examples or trainer.datamodule.instances
        self.last = self.meter.measure(module, examples, trainer.datamodule.tokenizer)
        return self.last

    def state_dict(self) -> dict:  # a resumed run keeps the first value (and does not measure "before" again)
        return {"first": self.first, "last": self.last, "last_step": self._last_step}

    def load_state_dict(self, state: dict) -> None:
        self.first, self.last, self._last_step = state["first"], state["last"], state["last_step"]

    def on_train_start(self, trainer, module) -> None:
        if self.first is not None:
            return
        self.first = self.measure(trainer, module)
        for logger in trainer.loggers:
            logger.log_metrics({"val/fixed_noise_loss": self.first}, step=trainer.global_step)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step and step % self.every_n_steps == 0 and step != self._last_step:
            self._last_step = step
            module.log("val/fixed_noise_loss", self.measure(trainer, module), on_step=True, batch_size=1)

    def on_train_end(self, trainer, module) -> None:
        if self._last_step == trainer.global_step:
            return
        value = self.measure(trainer, module)  # module.log is not allowed here: write to the loggers directly
        for logger in trainer.loggers:
            logger.log_metrics({"val/fixed_noise_loss": value}, step=trainer.global_step)
            logger.save()
