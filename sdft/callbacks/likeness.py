"""The likeness meter while training: at every step checkpoint and at the end, fixed-seed samples with the run's own
sampler settings (the validation grid's, sdft/callbacks/validation_grid.py) are scored against the training images
(sdft/evaluation/likeness*.py), with the fixed-noise validation loss beside them; after each measurement the table and
chart are rewritten and the recommended checkpoint is protected from keep-K pruning; at the end its LoRA files are
copied to `<phase>/best/` and named in summary.json (docs/eval.md, "Likeness while training")."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch

from sdft.callbacks.fixed_noise_loss import FixedNoiseLoss
from sdft.callbacks.validation_grid import log_grid
from sdft.evaluation.likeness import LikenessMeter, LikenessRecord
from sdft.evaluation.likeness_rule import Rule
from sdft.memory import trim_heap

log = logging.getLogger(__name__)
# A sampling step with classifier-free guidance runs the U-Net forward twice per image; a training step runs forward
# and backward (about two more forwards) per image: 2:3 in U-Net work. Measured on the SD 1.5 U-Net (fp32 CPU, 256 px:
# bench/likeness_cost.py --measure-sd15): 0.61. Only the first measurement's cost is estimated so; later ones are timed.
SAMPLING_STEP_PER_TRAINING_IMAGE = 2 / 3


class LikenessCallback(L.Callback):
    def __init__(
        self, meter: LikenessMeter, record: LikenessRecord, grids, checkpoint, val_loss: FixedNoiseLoss | None
    ):
        self.meter, self.record, self.grids, self.checkpoint = meter, record, grids, checkpoint
        self.val_loss = val_loss
        self.seconds = 0.0  # time spent measuring (bench/likeness_cost.py)
        self.best: Path | None = None
        self.max_share = 0.0  # callbacks.likeness.max_share (set by from_config)
        self.skipped: list[int] = []  # checkpoints not measured to keep within max_share
        self.images_per_step = 1  # training images per optimizer step (instances + class samples)
        self.sampling_steps = 20  # the run's sampler steps (callbacks.validation_steps)
        self._started: float | None = None

    @classmethod
    def from_config(cls, cfg, phase_dir: Path, grids, checkpoint, instances: list, held_out: list):
        """The meter of one phase (cfg: the phase's whole config); the scorer is built here, so a forced metric that
        does not fit the data (no faces, dlib missing) fails before training. None (with a warning) when the prompts
        do not tell the subject's identifier and class word (eval.identifier / eval.class_noun set them)."""
        from sdft.data.images import load_rgb
        from sdft.evaluation.likeness_prompts import meter_prompts
        from sdft.evaluation.likeness_scorers import choose_metric, make_scorer

        from sdft.errors import ConfigError, SdftError

        lk = cfg.callbacks.likeness
        try:
            prompts = meter_prompts(cfg.data, lk, toy=cfg.model.path == "toy", eval_cfg=cfg.eval)
        except ConfigError as err:  # no instance / class prompt to tell the subject by: the run trains without it
            log.warning("Likeness meter off: %s", err)
            return None
        real = [load_rgb(e.path) for e in instances]
        spec = getattr(lk.metric, "value", lk.metric)
        metric = choose_metric(spec, cfg.model.path, real)
        try:
            scorer = make_scorer(metric, real, lambda: feature_scorers(cfg))
        except SdftError as err:
            if spec != "auto":
                raise  # a forced metric that cannot run: one clear error before training
            log.warning("Likeness meter off (callbacks.likeness.metric=auto): %s", err)  # e.g. DINO not available
            return None
        meter = LikenessMeter(scorer, prompts, list(lk.seeds), list(lk.flex_seeds), lk.batch_size)
        info = {"metric": metric, "prompts": vars(prompts), "seeds": list(lk.seeds), "flex_seeds": list(lk.flex_seeds)}
        record = LikenessRecord(phase_dir, Rule.from_config(lk), info)
        val_loss = None
        if cfg.callbacks.fixed_noise_loss:
            val_loss = FixedNoiseLoss(0, cfg.data.resolution, seed=cfg.seed, examples=held_out or None)
        log.info("Likeness meter: metric %s, %d images per checkpoint", metric, meter.images_per_measurement())
        callback = cls(meter, record, grids, checkpoint, val_loss)
        callback.max_share = lk.max_share
        accumulate = cfg.trainer.get("accumulate_grad_batches", 1) or 1
        callback.images_per_step = cfg.data.batch_size * (2 if cfg.prior.enabled else 1) * accumulate
        callback.sampling_steps = cfg.callbacks.validation_steps
        return callback

    def within_budget(self, step: int, max_steps: int) -> bool:
        """Whether measuring this step checkpoint keeps the meter within max_share of the run's training time
        (projected from the steps so far to max_steps) with the final measurement, which is always taken, reserved.
        A measurement lasts as long as those so far on average, or, before the first, as estimated from the training
        step's time (images it renders x sampling steps x SAMPLING_STEP_PER_TRAINING_IMAGE x time per training
        image)."""
        if not self.max_share or self._started is None or step <= 0:
            return True
        import time

        trained = time.perf_counter() - self._started - self.seconds
        if self.record.rows:
            per = self.seconds / len(self.record.rows)
        else:
            per_image = trained / (step * self.images_per_step)
            images = self.meter.images_per_measurement()
            per = images * self.sampling_steps * SAMPLING_STEP_PER_TRAINING_IMAGE * per_image
        return self.seconds + 2 * per <= self.max_share * trained * max(max_steps, step) / step

    def on_train_start(self, trainer: L.Trainer, module) -> None:
        import time

        self._started = time.perf_counter() - self.seconds  # a resumed run counts the time before the interruption

    def measure(self, trainer: L.Trainer, module, step: int, folder: Path) -> None:
        import time

        start = time.perf_counter()
        trim_heap()
        values = self.meter.measure(lambda prompts, seeds: self.grids.sample_pairs(module, prompts, seeds))
        values["val_loss"] = round(self.val_loss.measure(trainer, module), 6) if self.val_loss else None
        self.record.add(step, folder, values)
        self.record.write()
        chosen = self.record.recommended()
        self.checkpoint.keep = {Path(chosen["checkpoint"])} if chosen else set()  # never pruned (keep-K)
        self.seconds += time.perf_counter() - start
        metrics = {f"likeness/{k}": float(v) for k, v in values.items() if isinstance(v, (int, float))}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        from PIL import Image

        log_grid(
            trainer, Image.open(self.record.out_dir / "likeness.png").convert("RGB"), f"step_{step}", "likeness/chart"
        )
        log.info("Likeness at step %d: %s", step, {k: v for k, v in values.items() if v is not None})

    def on_train_batch_end(self, trainer: L.Trainer, module, outputs, batch, batch_idx) -> None:
        step, every = trainer.global_step, self.checkpoint.every_n_steps
        if not every or step == 0 or step % every or step >= trainer.max_steps or not trainer.is_global_zero:
            return
        if any(r["step"] == step for r in self.record.rows) or step in self.skipped:
            return  # gradient accumulation: several batches end on one step
        if not self.within_budget(step, trainer.max_steps):
            self.skipped.append(step)
            log.info("Likeness: step %d not measured (callbacks.likeness.max_share=%s)", step, self.max_share)
            return
        self.measure(trainer, module, step, self.checkpoint.phase_dir / "checkpoints" / f"step_{step:06d}")

    @torch.no_grad()
    def on_train_end(self, trainer: L.Trainer, module) -> None:
        """After LoraCheckpoint's final save (this callback comes after it in the list)."""
        if not trainer.is_global_zero or self.checkpoint.final_path is None:
            return
        self.measure(trainer, module, trainer.global_step, Path(self.checkpoint.final_path).parent)
        self.best = self.record.copy_best()

    def summary(self) -> dict:
        chosen = self.record.recommended()
        return {
            "metric": self.record.info["metric"],
            "recommended_step": chosen["step"] if chosen else None,
            "recommended_checkpoint": chosen["checkpoint"] if chosen else None,
            "best_dir": str(self.best) if self.best else None,
            "table": str(self.record.out_dir / "likeness.csv"),
            "seconds": round(self.seconds, 2),
            "skipped_steps": self.skipped,
        }

    def state_dict(self) -> dict:  # a resumed run keeps the rows measured before the interruption
        return {"rows": self.record.rows, "seconds": self.seconds, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.record.rows, self.seconds, self.skipped = list(state["rows"]), state["seconds"], list(state["skipped"])


def feature_scorers(cfg):
    """(CLIP, DINO) scorers of the run's eval.clip_model / eval.dino_model (the `sdft eval` models)."""
    from sdft.evaluation.features import ClipScorer, DinoScorer, resolve_feature_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    offline, cache = bool(cfg.model.local_files_only), cfg.model.cache_dir
    clip = ClipScorer(resolve_feature_model(cfg.eval.clip_model, "clip", cfg.model.path, cache), device, offline)
    dino = DinoScorer(resolve_feature_model(cfg.eval.dino_model, "dino", cfg.model.path, cache), device, offline)
    return clip, dino
