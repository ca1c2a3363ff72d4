"""The callback list of one phase, built in one place (the order matters: see the comments)."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig

from sdft.adapters.kinds import is_peft_kind
from sdft.adapters.kohya import kohya_file_name, run_metadata
from sdft.callbacks.controls import RunControls
from sdft.callbacks.fixed_noise_loss import FixedNoiseLoss
from sdft.callbacks.graceful_stop import GracefulStop
from sdft.callbacks.likeness import LikenessCallback
from sdft.callbacks.lora_checkpoint import LoraCheckpoint
from sdft.callbacks.pipeline_parts import PipelineParts
from sdft.callbacks.progress import RunProgress
from sdft.callbacks.resident_memory import ResidentMemory
from sdft.callbacks.train_stats import TrainStats
from sdft.callbacks.training_state import ResumePoint, TrainingState
from sdft.callbacks.validation_grid import ValidationGrid
from sdft.config import LoggerKind
from sdft.data.folders import default_validation_prompts
from sdft.data.phase_data import PhaseData
from sdft.embeddings.training import EmbeddingSchedule, expand_prompts, freeze_step
from sdft.training.ema import EmaWeights
from sdft.families import family_of


def validation_prompts(cfg: DictConfig, data: PhaseData) -> list[str]:
    """callbacks.validation_prompts, else the phase's instance and class prompts."""
    if cfg.callbacks.validation_prompts:
        return list(cfg.callbacks.validation_prompts)
    return default_validation_prompts(data.settings, data.report.concepts)


def build_callbacks(
    cfg: DictConfig,
    data: PhaseData,
    out_dir: Path,
    pipe,
    family,
    embedding,
    resume_point: ResumePoint,
    *,
    with_logger: bool = True,
    run_steps: tuple[int, int] | None = None,
) -> list:
    """Every callback of one phase, in order. `family`: sdft.families.family_parts (SDXL's second tower/tokenizer);
    `resume_point`: shared with the datamodule; `run_steps`: (steps before this phase, the run's) for the progress bar."""
    cb, phase_dir = cfg.callbacks, out_dir / cfg.phase.name
    parts = PipelineParts(pipe.tokenizer, pipe.scheduler, family.tokenizer_2, cfg.model.clip_skip)
    checkpoint = LoraCheckpoint(
        phase_dir,
        cfg.adapter.kind,
        cb,
        parts,
        kohya_name=kohya_file_name(cfg),
        # the kohya file's ss_* metadata (sdft/adapters/kohya.py), with the family's fields (SD 1 / SD 2 / SDXL)
        kohya_metadata=run_metadata(cfg, data.instances, family_of(pipe).kohya_metadata(pipe.scheduler.config)),
        log_artifact=cfg.logger.log_lora,
    )
    prompts = expand_prompts(validation_prompts(cfg, data), embedding)
    grids = ValidationGrid(phase_dir, prompts, cb, cfg.data.resolution, parts)
    callbacks = [TrainingState(cfg.seed, resume_point)]  # first: seeds the batches
    if cfg.ema.enabled:  # before the checkpoint and grids: its update precedes their saves (sdft/training/ema.py)
        callbacks.append(EmaWeights(cfg.ema, checkpoint))
    callbacks += [checkpoint, grids, TrainStats()]
    callbacks.append(ResidentMemory())  # frozen weights the step does not read leave the resident set
    if embedding is not None:  # freezes it after adapter.embedding.train_fraction of the steps
        callbacks.append(EmbeddingSchedule(embedding, pipe.text_encoder, freeze_step(cfg), family.text_encoder_2))
    if cfg.logger.kind != LoggerKind.none and with_logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))  # lr-<optimizer>/unet, .../text_encoder
    if cb.fixed_noise_loss:
        held_out = data.held_out or None
        callbacks.append(
            FixedNoiseLoss(cb.validation_every_n_steps, cfg.data.resolution, seed=cfg.seed, examples=held_out)
        )
    if cfg.trainer.enable_progress_bar:  # on a GPU, refresh at log intervals: each refresh reads the loss (a sync)
        offset, total = run_steps or (0, cfg.trainer.max_steps)
        refresh = cfg.trainer.log_every_n_steps if torch.cuda.is_available() else 1
        callbacks.append(RunProgress(cfg.phase.name, offset, total, cb.progress.every_n_steps, refresh))
    if cb.likeness.enabled and cb.checkpoint_every_n_steps and is_peft_kind(cfg.adapter.kind) and embedding is None:
        meter = LikenessCallback.from_config(cfg, phase_dir, grids, checkpoint, data.instances, data.held_out)
        callbacks += [meter] if meter is not None else []  # after the checkpoint
    stop = GracefulStop(checkpoint)  # last: SIGTERM / Ctrl-C stop at a batch end, after every other hook
    callbacks += [RunControls(out_dir, cfg.phase.name, checkpoint, grids, stop), stop]  # sdft run sample|save|stop
    return callbacks


def find(callbacks: list, kind: type):
    """The callback of type `kind` in a phase's list (None if absent)."""
    return next((c for c in callbacks if isinstance(c, kind)), None)
