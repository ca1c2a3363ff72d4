"""EMA of the trained weights: diffusers' EMAModel, updated after every optimizer step, saved with the resumable state
(so a resumed run's average equals an uninterrupted one's), and put in place for the saved LoRA files."""

from __future__ import annotations

import contextlib
import logging

import lightning as L
import torch
from diffusers.training_utils import EMAModel

from sdft.config import EmaConfig
from sdft.errors import ConfigError

log = logging.getLogger(__name__)
DEVICES = ("same", "cpu")


def check_ema_config(cfg: EmaConfig) -> None:
    if not cfg.enabled:
        return
    if cfg.device not in DEVICES:
        raise ConfigError(f"ema.device={cfg.device!r}: use same (beside the weights) or cpu.")
    # ema.decay / start_step: their ranges are declared in sdft/config.py and checked by sdft/run/checks.py


class EmaWeights(L.Callback):
    """List it before LoraCheckpoint and the grids: its batch-end update must precede their saves.

    `checkpoint` (a LoraCheckpoint) gets the swap that saves from the average when ema.save_ema_weights; otherwise the
    average is written to <phase>/lora_ema/ at the end, beside the raw weights' lora/.
    """

    def __init__(self, cfg: EmaConfig, checkpoint=None):
        self.cfg, self.checkpoint = cfg, checkpoint
        self.ema: EMAModel | None = None
        self._pending: dict | None = None  # restored state, applied when training starts
        self._last_step = -1
        if checkpoint is not None and cfg.save_ema_weights:
            checkpoint.swap = self.swapped

    @staticmethod
    def trained(module) -> list[torch.nn.Parameter]:
        return [p for p in module.parameters() if p.requires_grad]

    def _view(self, params: list) -> list:
        """What EMAModel sees: the parameters, or CPU copies of them (marked trainable: EMAModel copies the others)."""
        if self.cfg.device == "cpu":
            return [p.detach().to("cpu").requires_grad_(True) for p in params]
        return params

    def on_train_start(self, trainer, module) -> None:  # after Lightning restored the state (load_state_dict)
        params = self.trained(module)
        self.ema = EMAModel(
            self._view(params),
            decay=self.cfg.decay,
            update_after_step=self.cfg.start_step,
            use_ema_warmup=self.cfg.warmup,
            power=self.cfg.power,
        )
        if self._pending is not None:
            device = "cpu" if self.cfg.device == "cpu" else params[0].device
            self.ema.load_state_dict(
                {**self._pending, "shadow_params": [s.to(device) for s in self._pending["shadow_params"]]}
            )
            self._pending = None
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > self._last_step:  # an optimizer step happened (gradient accumulation: the last batch)
            self._last_step = trainer.global_step
            self.ema.step(self._view(self.trained(module)))

    @contextlib.contextmanager
    def swapped(self, module):
        """The average in place of the trained weights inside the block; the weights restored exactly after it."""
        if self.ema is None:
            yield
            return
        params = self.trained(module)
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    def on_train_end(self, trainer, module) -> None:
        if self.cfg.save_ema_weights:  # the phase ends on the average: final state, grids, a next phase start from it
            self.ema.copy_to(self.trained(module))
        elif self.checkpoint is not None and trainer.is_global_zero:
            with self.swapped(module):
                path = self.checkpoint.save(
                    module,
                    self.checkpoint.phase_dir / "lora_ema",
                    self.checkpoint.kohya_name,
                    trainer.global_step,
                    trainer.current_epoch,
                )
            log.info("Saved the EMA weights to %s", path)

    def state_dict(self) -> dict:
        if self.ema is not None:
            return {"ema": self.ema.state_dict()}
        return {"ema": self._pending} if self._pending is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._pending = state.get("ema")
