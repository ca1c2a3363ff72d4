"""prepare(cfg, data): wire one phase from its checked config and its scanned data (a PhaseData, sdft/data/phase_data.py)
-- model, class images, adapters, module, datamodule, callbacks (sdft/run/callbacks.py) and the Lightning Trainer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from sdft.adapters.lora import start_phase
from sdft.callbacks.lora_checkpoint import LoraCheckpoint
from sdft.callbacks.train_stats import TrainStats
from sdft.callbacks.training_state import ResumePoint
from sdft.callbacks.validation_grid import ValidationGrid
from sdft.data.buckets import native_resolution, with_native_sizes
from sdft.data.datamodule import DreamBoothDataModule
from sdft.data.folders import data_source
from sdft.data.masks import MaskTransform
from sdft.data.phase_data import PhaseData
from sdft.data.prior import prior_examples
from sdft.embeddings.training import attach_embedding, prompt_tokenizer
from sdft.errors import ConfigError
from sdft.families import family_parts
from sdft.families.load import load_pipeline
from sdft.models.loading import make_noise_scheduler, prepare_models
from sdft.models.params import count_params
from sdft.run.callbacks import build_callbacks, find
from sdft.run.loggers import make_logger
from sdft.training.module import DreamBoothModule, StepModels
from sdft.training.noise import use_zero_terminal_snr
from sdft.training.prior_prediction import BasePrior, base_prior_prompt, caption_swap

log = logging.getLogger(__name__)


@dataclass
class RunParts:
    """One phase, wired but not started (tests drive these directly)."""

    cfg: DictConfig
    out_dir: Path
    pipe: object
    module: DreamBoothModule
    datamodule: DreamBoothDataModule
    trainer: L.Trainer
    checkpoint: LoraCheckpoint
    grids: ValidationGrid
    params: dict
    stats: TrainStats


def output_dir(cfg: DictConfig) -> Path:
    if cfg.output_dir:
        return Path(cfg.output_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    raise ConfigError("output_dir is not set and no Hydra run is active: pass output_dir=<folder>.")


def report_params(unet, text_encoder) -> dict:
    counts = {}
    for name, model in (("unet", unet), ("text_encoder", text_encoder)):
        trainable, total = count_params(model)
        counts[name] = {"trainable": trainable, "total": total}
        log.info(
            "%-12s trainable %12s of %14s parameters (%.3f%%)",
            name,
            f"{trainable:,}",
            f"{total:,}",
            100 * trainable / max(total, 1),
        )
    return counts


def class_images(cfg: DictConfig, pipe, data: PhaseData) -> list:
    """The phase's class examples (generated with the current weights if missing; None without prior)."""
    classes = prior_examples(cfg, pipe, data.report)  # per concept; kohya is_reg sets are used even without prior
    pipe.to("cpu")  # Lightning moves what it trains; keep the start state uniform
    return classes


def attach_adapters(cfg: DictConfig, pipe, family, previous: str | None):
    """The phase's adapter on the models (from phase.init_lora, or after `previous`'s), compiled if asked, and its
    embedding (textual inversion / pivotal tuning), or None."""
    if cfg.phase.init_lora and previous is None:
        from sdft.adapters.load import load_lora_into

        imported = load_lora_into(
            pipe.unet,
            pipe.text_encoder,
            cfg.phase.init_lora,
            train_unet=cfg.adapter.train_unet,
            train_text_encoder=cfg.adapter.train_text_encoder,
            dropout=cfg.adapter.dropout,
            text_encoder_2=family.text_encoder_2,  # SDXL: an SDXL LoRA file, into both towers
        )
        log.info("Phase %r starts from %s (%s)", cfg.phase.name, cfg.phase.init_lora, imported)
        previous = "init"
    start_phase(pipe.unet, pipe.text_encoder, cfg.adapter, cfg.phase.start.value, previous, family.text_encoder_2)
    if cfg.model.compile:  # nn.Module.compile: in place, so state-dict keys (and saved LoRAs) keep their names
        pipe.unet.compile()
    return attach_embedding(cfg, family.text_towers(pipe))  # textual inversion / pivotal tuning (every tower)


def base_prior(cfg: DictConfig, pipe, family) -> BasePrior | None:
    """prior.base_prediction: the class prompt's ids (and the caption swap) the base model's prediction is made from."""
    if not cfg.prior.base_prediction:
        return None
    tokenizer = family.tokenizer or pipe.tokenizer  # SDXL: both towers' ids
    ids = tokenizer(
        base_prior_prompt(cfg),
        padding="max_length",
        truncation=True,
        max_length=tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids
    swap = caption_swap(cfg, pipe.tokenizer, family.tokenizer_2)
    return BasePrior(ids, cfg.prior.base_prediction_weight, swap)


def build_module(cfg: DictConfig, pipe, family, embedding) -> DreamBoothModule:
    """The LightningModule over the adapted models (after `attach_adapters`)."""
    train_te = any(p.requires_grad for p in pipe.text_encoder.parameters()) or embedding is not None
    train_te = train_te or family.trains_text_encoder_2
    models = StepModels(
        pipe.unet,
        pipe.text_encoder,
        pipe.vae,
        make_noise_scheduler(pipe),
        text_encoder_2=family.text_encoder_2,
        conditioning=family.conditioning,
        embeddings=embedding,
        clip_skip=cfg.model.clip_skip,
    )
    return DreamBoothModule(
        models,
        cfg.optim,
        cfg.loss,
        prior_loss_weight=cfg.prior.loss_weight,
        train_text_encoder=train_te,
        base_prior=base_prior(cfg, pipe, family),
    )


def build_trainer(cfg: DictConfig, out_dir: Path, callbacks: list, with_logger: bool = True) -> L.Trainer:
    """The Lightning Trainer of a phase: cfg.trainer, the phase's logger (none when `with_logger` is false)."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    logger = make_logger(cfg.logger, out_dir, cfg.name, cfg.phase.name, resolved) if with_logger else False
    return L.Trainer(
        **OmegaConf.to_container(cfg.trainer, enum_to_str=True),
        max_epochs=-1,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        default_root_dir=str(out_dir),
    )


def prepare(
    cfg: DictConfig,
    data: PhaseData,
    pipe=None,
    previous: str | None = None,
    with_logger: bool = True,
    run_steps: tuple[int, int] | None = None,
) -> RunParts:
    """Load the model (unless given), make class images, set up adapters, build module, datamodule and Trainer.

    `cfg`, `data`: one phase's checked config and its scanned data (sdft.run.train.checked_phases).
    `previous` names the phase whose adapter the given `pipe` holds (see sdft.adapters.lora.start_phase).
    `with_logger=False`: no logger (a finished phase rebuilt on resume).
    `run_steps`: (steps of the phases before this one, the run's steps) for the whole-run progress bar.
    """
    out_dir = output_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    held = f" (+{len(data.held_out)} held out for validation)" if data.held_out else ""
    log.info("Phase %r: %d instance images from %s%s", cfg.phase.name, len(data.instances), data_source(cfg.data), held)

    if pipe is None:
        pipe = load_pipeline(cfg.model)
        prepare_models(pipe, cfg.model)
    family = family_parts(pipe, cfg)  # SD 1.x or SDXL: conditioning, tokenizers, text towers (refuses what SDXL lacks)
    with_native_sizes(data.settings, native_resolution(pipe))  # null sizes: the model's own (SDXL: 1024, buckets)
    cfg.data = data.settings  # one resolved data view (a kohya TOML's resolution...) for every consumer
    classes = class_images(cfg, pipe, data)
    if cfg.loss.zero_terminal_snr:  # after the class images (made by the base model as it is)
        use_zero_terminal_snr(pipe)
    embedding = attach_adapters(cfg, pipe, family, previous)
    params = report_params(pipe.unet, pipe.text_encoder)
    params.update(family.param_counts())  # SDXL: the second text tower
    if embedding is not None:
        size = sum(p.numel() for p in embedding.parameters())
        params["embedding"] = {"trainable": size, "total": size}
    module = build_module(cfg, pipe, family, embedding)
    resume_point = ResumePoint()  # shared by the datamodule's sampler and the TrainingState callback
    datamodule = DreamBoothDataModule(
        data.settings,
        prompt_tokenizer(family.tokenizer or pipe.tokenizer, embedding),
        data.instances,
        classes,
        cfg.seed,
        resume=resume_point,
        masks=MaskTransform(cfg.data.mask_dir) if cfg.loss.masked_loss else None,  # loss masks (sdft/data/masks.py)
        time_ids=family.time_ids,
    )
    callbacks = build_callbacks(
        cfg, data, out_dir, pipe, family, embedding, resume_point, with_logger=with_logger, run_steps=run_steps
    )
    phase_dir = out_dir / cfg.phase.name
    phase_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, phase_dir / "config.yaml", resolve=True)
    trainer = build_trainer(cfg, out_dir, callbacks, with_logger)
    checkpoint, grids = find(callbacks, LoraCheckpoint), find(callbacks, ValidationGrid)
    return RunParts(
        cfg, out_dir, pipe, module, datamodule, trainer, checkpoint, grids, params, find(callbacks, TrainStats)
    )
