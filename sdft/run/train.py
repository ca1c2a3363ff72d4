"""run(cfg): wire config, models, data, callbacks and the Lightning Trainer together, then train."""

from __future__ import annotations

import json
import logging
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from sdft.adapters.kinds import is_peft_kind
from sdft.adapters.kohya import kohya_metadata, tag_frequency
from sdft.adapters.lora import start_phase
from sdft.adapters.model_card import write_model_card
from sdft.models.params import count_params
from sdft.adapters.targets import TEXT_ENCODER_TARGETS, UNET_TARGETS, check_target_names
from sdft.atomic import write_text
from sdft.callbacks.controls import RunControls
from sdft.callbacks.fixed_noise_loss import FixedNoiseLoss
from sdft.callbacks.graceful_stop import GracefulStop, stop_before_training
from sdft.callbacks.likeness import LikenessCallback
from sdft.callbacks.lora_checkpoint import LoraCheckpoint
from sdft.callbacks.progress import RunProgress, quiet_library_bars
from sdft.callbacks.resident_memory import ResidentMemory
from sdft.callbacks.train_stats import TrainStats
from sdft.callbacks.training_state import ResumePoint, TrainingState
from sdft.callbacks.validation_grid import ValidationGrid
from sdft.run.checks import check_values, typed_config
from sdft.config import LoggerKind, SdftConfig
from sdft.data.buckets import native_resolution, with_native_sizes
from sdft.data.datamodule import DreamBoothDataModule
from sdft.data.folders import check_data_config, data_settings, data_source, default_validation_prompts
from sdft.data.phase_data import PhaseData, phase_data
from sdft.data.prior import prior_examples
from sdft.data.masks import MaskTransform
from sdft.training.ema import EmaWeights, check_ema_config
from sdft.embeddings.training import (
    EmbeddingSchedule,
    attach_embedding,
    check_embedding_config,
    expand_prompts,
    freeze_step,
    prompt_tokenizer,
)
from sdft.errors import ConfigError
from sdft.run.loggers import close_loggers, make_logger
from sdft.families import family_of, family_parts
from sdft.families.load import load_pipeline
from sdft.models.loading import make_noise_scheduler, prepare_models
from sdft.models.quantize import check_quantize
from sdft.training.module import DreamBoothModule
from sdft.training.noise import check_zero_terminal_snr, use_zero_terminal_snr
from sdft.training.optimizers import optimizer_class
from sdft.run.phases import phase_configs
from sdft.prep.doctor.hooks import at_start as doctor_at_start
from sdft.training.prior_prediction import BasePrior, base_prior_prompt, caption_swap, check_base_prior
from sdft.run.plan.headline import announce
from sdft.run.resume import check_same_run, find_run, phase_status, restore_weights, untrusted

log = logging.getLogger(__name__)
# Frozen models stay in eval mode on purpose (DreamBoothModule.train); Lightning's warning about it is noise here.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
# Our sampler resumes mid-epoch itself (sdft/callbacks/training_state.py); Lightning cannot see that and warns.
warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended")
# On resume the CSV logger appends to the phase's metrics.csv (it rewrites it only to add columns, keeping the rows).
warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")


def as_config(cfg: DictConfig | dict | SdftConfig) -> DictConfig:
    """A typed config. Plain containers are merged onto the schema, so unknown keys fail here too (Hydra's `+key=`
    can add keys to typed nodes; going through a plain container re-checks every key)."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    return typed_config(cfg)


def output_dir(cfg: DictConfig) -> Path:
    if cfg.output_dir:
        return Path(cfg.output_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    raise ConfigError("output_dir is not set and no Hydra run is active: pass output_dir=<folder>.")


def check_config(cfg: DictConfig) -> None:
    """Checks that need no model or data: fail before any long work."""
    check_data_config(cfg.data, cfg.prior.enabled)
    check_values(cfg, data_settings(cfg.data))
    if is_peft_kind(cfg.adapter.kind):
        check_target_names(cfg.adapter.unet_targets, UNET_TARGETS, "adapter.unet_targets")
        check_target_names(cfg.adapter.text_encoder_targets, TEXT_ENCODER_TARGETS, "adapter.text_encoder_targets")
    if cfg.phase.init_lora and not Path(cfg.phase.init_lora).expanduser().is_file():
        raise ConfigError(f"phase {cfg.phase.name!r}: init_lora={cfg.phase.init_lora} is not a file.")
    check_embedding_config(cfg)
    check_zero_terminal_snr(cfg.loss, cfg.model.prediction_type)
    check_ema_config(cfg.ema)
    check_base_prior(cfg)
    check_quantize(cfg)
    if cfg.optim.optimizer:
        optimizer_class(cfg.optim.optimizer)  # a missing package fails here, naming it


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


def validation_prompts(cfg: DictConfig, data: PhaseData) -> list[str]:
    if cfg.callbacks.validation_prompts:
        return list(cfg.callbacks.validation_prompts)
    return default_validation_prompts(data.settings, data.report.concepts)


def kohya_file_name(cfg: DictConfig) -> str:
    """The kohya/A1111 file's name is what A1111 shows as the LoRA's name: the run name (and phase, if not main)."""
    return cfg.name if cfg.phase.name == "main" else f"{cfg.name}_{cfg.phase.name}"


def kohya_metadata_fn(cfg: DictConfig, instances: list, resolved: dict, base: dict | None = None):
    """ss_* metadata for the kohya file at a given (step, epoch): base, resolution, tags, config; `base`: the
    family's fields (`Family.kohya_metadata`: ss_v2, ss_base_model_version, ss_v_parameterization)."""
    by_folder: dict[str, list[str]] = {}
    for e in instances:
        by_folder.setdefault(e.concept.name if e.concept else e.path.parent.name, []).append(e.prompt)
    tags = {name: tag_frequency(prompts) for name, prompts in by_folder.items()}

    def metadata(step: int, epoch: int) -> dict:  # ss_network_dim/alpha/module/args: from the saved tensors
        return kohya_metadata(
            base=base,
            base_model=cfg.model.path,
            steps=step,
            epoch=epoch,
            resolution=cfg.data.resolution,
            tag_frequencies=tags,
            training_comment=f"sdft: {cfg.data.instance_prompt}",
            config=resolved,
        )

    return metadata


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, default=str))


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


def class_images(cfg: DictConfig, pipe, data: PhaseData) -> list:
    """The phase's class examples (generated with the current weights if missing; None without prior)."""
    classes = prior_examples(cfg, pipe, data.report)  # per concept; kohya is_reg sets are used even without prior
    pipe.to("cpu")  # Lightning moves what it trains; keep the start state uniform
    return classes


def prepare(
    cfg: DictConfig | dict,
    pipe=None,
    previous: str | None = None,
    with_logger: bool = True,
    data: PhaseData | None = None,
    run_steps: tuple[int, int] | None = None,
) -> RunParts:
    """Check config and data, load the model (unless given), make class images, set up adapters, build the Trainer.

    `previous` names the phase whose adapter the given `pipe` holds (see sdft.adapters.lora.start_phase).
    `with_logger=False`: no logger (a finished phase rebuilt on resume).
    `data`: the phase's checked config's dataset, from run(); without it (tests) the config is checked and scanned here.
    `run_steps`: (steps of the phases before this one, the run's steps) for the whole-run progress bar.
    """
    if data is None:
        cfg = as_config(cfg)
        check_config(cfg)
        data = phase_data(cfg)  # bad folders and images fail here, before the model loads
    out_dir = output_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    phase_dir = out_dir / cfg.phase.name
    L.seed_everything(cfg.seed, workers=True)
    instances, held_out = data.instances, data.held_out
    log.info(
        "Phase %r: %d instance images from %s%s",
        cfg.phase.name,
        len(instances),
        data_source(cfg.data),
        f" (+{len(held_out)} held out for validation)" if held_out else "",
    )

    if pipe is None:
        pipe = load_pipeline(cfg.model)
        prepare_models(pipe, cfg.model)
    family = family_parts(pipe, cfg)  # SD 1.x or SDXL: conditioning, tokenizers, text towers (refuses what SDXL lacks)
    with_native_sizes(data.settings, native_resolution(pipe))  # null sizes: the model's own (SDXL: 1024, buckets)
    cfg.data = data.settings  # one resolved data view (a kohya TOML's resolution...) for every consumer
    classes = class_images(cfg, pipe, data)
    if cfg.loss.zero_terminal_snr:  # after the class images (made by the base model as it is)
        use_zero_terminal_snr(pipe)
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
    embedding = attach_embedding(  # textual inversion / pivotal tuning (SDXL: both towers)
        cfg, pipe.tokenizer, pipe.text_encoder, family.tokenizer_2, family.text_encoder_2
    )
    params = report_params(pipe.unet, pipe.text_encoder)
    params.update(family.param_counts())  # SDXL: the second text tower
    if embedding is not None:
        size = sum(p.numel() for p in embedding.parameters())
        params["embedding"] = {"trainable": size, "total": size}
    train_te = any(p.requires_grad for p in pipe.text_encoder.parameters()) or embedding is not None
    train_te = train_te or family.trains_text_encoder_2
    base_prior = None
    if cfg.prior.base_prediction:
        tokenizer = family.tokenizer or pipe.tokenizer  # SDXL: both towers' ids
        ids = tokenizer(
            base_prior_prompt(cfg),
            padding="max_length",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids
        swap = caption_swap(cfg, pipe.tokenizer, family.tokenizer_2)
        base_prior = BasePrior(ids, cfg.prior.base_prediction_weight, swap)
    module = DreamBoothModule(
        pipe.unet,
        pipe.text_encoder,
        pipe.vae,
        make_noise_scheduler(pipe),
        cfg.optim,
        cfg.loss,
        cfg.prior.loss_weight,
        train_te,
        cfg.model.clip_skip,
        embedding,
        base_prior=base_prior,
        text_encoder_2=family.text_encoder_2,
        conditioning=family.conditioning,
    )
    resume_point = ResumePoint()
    masks = MaskTransform(cfg.data.mask_dir) if cfg.loss.masked_loss else None  # loss masks (sdft/data/masks.py)
    datamodule = DreamBoothDataModule(
        cfg.data,
        prompt_tokenizer(family.tokenizer or pipe.tokenizer, embedding),
        instances,
        classes,
        cfg.seed,
        resume=resume_point,
        masks=masks,
        time_ids=family.time_ids,
    )

    cb = cfg.callbacks
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    checkpoint = LoraCheckpoint.from_config(
        phase_dir,
        cfg.adapter.kind,
        cb,
        pipe.tokenizer,
        pipe.scheduler,
        kohya_file_name(cfg),
        kohya_metadata_fn(cfg, instances, resolved, family_of(pipe).kohya_metadata(pipe.scheduler.config)),
        cfg.logger.log_lora,
    )
    grids = ValidationGrid.from_config(
        phase_dir,
        expand_prompts(validation_prompts(cfg, data), embedding),
        cb,
        cfg.data.resolution,
        pipe.tokenizer,
        pipe.scheduler,
        cfg.model.clip_skip,
    )
    checkpoint.tokenizer_2 = grids.tokenizer_2 = family.tokenizer_2  # SDXL: pipelines for grids and full saves
    stats = TrainStats()
    callbacks = [TrainingState(cfg.seed, resume_point), checkpoint, grids, stats]  # TrainingState first: seeds batches
    callbacks.append(ResidentMemory())  # frozen weights the step does not read leave the resident set
    if embedding is not None:  # freezes it after adapter.embedding.train_fraction of the steps
        callbacks.append(EmbeddingSchedule(embedding, pipe.text_encoder, freeze_step(cfg), family.text_encoder_2))
    if cfg.ema.enabled:  # before the checkpoint and grids: its update precedes their saves (sdft/training/ema.py)
        callbacks.insert(1, EmaWeights(cfg.ema, checkpoint))
    if cfg.logger.kind != LoggerKind.none and with_logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))  # lr-<optimizer>/unet, .../text_encoder
    if cb.fixed_noise_loss:
        callbacks.append(
            FixedNoiseLoss(cb.validation_every_n_steps, cfg.data.resolution, seed=cfg.seed, examples=held_out or None)
        )
    if cfg.trainer.enable_progress_bar:  # on a GPU, refresh at log intervals: each refresh reads the loss (a sync)
        offset, total = run_steps or (0, cfg.trainer.max_steps)
        refresh = cfg.trainer.log_every_n_steps if torch.cuda.is_available() else 1
        callbacks.append(RunProgress(cfg.phase.name, offset, total, cb.progress.every_n_steps, refresh))
    if cb.likeness.enabled and cb.checkpoint_every_n_steps and is_peft_kind(cfg.adapter.kind) and embedding is None:
        meter = LikenessCallback.from_config(cfg, phase_dir, grids, checkpoint, instances, held_out)  # after checkpoint
        callbacks += [meter] if meter is not None else []
    stop = GracefulStop(checkpoint)  # last: SIGTERM / Ctrl-C stop at a batch end, after every other hook
    callbacks += [RunControls(out_dir, cfg.phase.name, checkpoint, grids, stop), stop]  # sdft run sample|save|stop
    phase_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, phase_dir / "config.yaml", resolve=True)
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, enum_to_str=True),
        max_epochs=-1,
        logger=make_logger(cfg.logger, out_dir, cfg.name, cfg.phase.name, resolved) if with_logger else False,
        callbacks=callbacks,
        enable_checkpointing=False,
        default_root_dir=str(out_dir),
    )
    return RunParts(cfg, out_dir, pipe, module, datamodule, trainer, checkpoint, grids, params, stats)


def fit(parts: RunParts, ckpt_path: Path | None = None) -> dict:
    """Train one phase (continuing from a Lightning checkpoint, if given); returns its summary."""
    cfg, trainer = parts.cfg, parts.trainer
    start = time.perf_counter()
    if ckpt_path is not None:
        log.info("Phase %r continues from %s", cfg.phase.name, ckpt_path)
    try:  # weights_only: a resumed checkpoint is read as tensors and plain values, never as code
        trainer.fit(
            parts.module,
            datamodule=parts.datamodule,
            ckpt_path=str(ckpt_path) if ckpt_path else None,
            weights_only=True,
        )
    except pickle.UnpicklingError as err:
        raise untrusted(ckpt_path, err) from None
    wall = time.perf_counter() - start
    close_loggers(trainer)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    fixed = next((c for c in trainer.callbacks if isinstance(c, FixedNoiseLoss)), None)
    if fixed is not None and fixed.last is not None:
        metrics["val/fixed_noise_loss_start"], metrics["val/fixed_noise_loss"] = fixed.first, fixed.last
    final, kohya = parts.checkpoint.final_path, parts.checkpoint.final_kohya_path
    likeness = next((c for c in trainer.callbacks if isinstance(c, LikenessCallback)), None)
    return {
        "name": cfg.name,
        "model": cfg.model.path,
        "adapter": cfg.adapter.kind.value,
        "embedding": cfg.adapter.embedding.placeholder,  # the trained token (textual inversion / pivotal), else None
        "phase": cfg.phase.name,
        "start": cfg.phase.start.value,
        "steps": trainer.global_step,
        "instance_images": len(parts.datamodule.instances),
        "validation_images": len(fixed.examples) if fixed is not None and fixed.examples else 0,
        "class_images": len(parts.datamodule.classes),
        "parameters": parts.params,
        "final_metrics": metrics,
        "train_seconds": round(wall, 2),
        **parts.stats.summary(),  # images_per_sec, peak_memory_gb
        "output": str(final) if final else None,
        "output_kohya": str(kohya) if kohya else None,
        "grids": [str(p) for p in parts.grids.written],
        "likeness": likeness.summary() if likeness is not None else None,  # the recommended checkpoint
    }


def run(cfg: DictConfig | dict) -> dict:
    """Train every phase in order on one loaded base; writes <output_dir>/summary.json and returns it.

    One phase: the summary is that phase's. Several: {"name", "phases": [phase summaries], "train_seconds"}.
    `resume=auto|<run folder>` continues an unfinished run in its own folder (sdft/run/resume.py).
    SIGTERM / Ctrl-C stop it with a checkpoint or, before a step has trained, at once (sdft/callbacks/graceful_stop.py).
    """
    with stop_before_training():
        return _run(cfg)


def _run(cfg: DictConfig | dict) -> dict:
    cfg = as_config(cfg)
    out_dir = output_dir(cfg)
    resumed = find_run(cfg, out_dir)
    if resumed is not None:
        check_same_run(resumed, cfg)
        log.info("Resuming the run in %s", resumed)
        out_dir = resumed
        cfg.output_dir = str(resumed)
    phases = phase_configs(cfg)
    for phase_cfg in phases:  # every phase's config is checked before any data is read
        check_config(phase_cfg)
    datas = [phase_data(phase_cfg) for phase_cfg in phases]  # and every phase's data before the first one trains
    doctor_at_start(phases, datas)  # the data doctor's cheap checks: severe findings before any model loads
    announce(cfg, phases, datas)  # the plan's headline; on CUDA a warning before loading if it will not fit
    out_dir.mkdir(parents=True, exist_ok=True)
    if resumed is None:
        OmegaConf.save(cfg, out_dir / "config.yaml", resolve=True)
    pipe, previous, summaries = None, None, []
    quiet_library_bars()  # off a terminal: no loading bars' redraws in the log
    steps = [phase_cfg.trainer.max_steps for phase_cfg in phases]  # the whole-run progress bar counts them all
    for i, (phase_cfg, data) in enumerate(zip(phases, datas)):
        status, state = phase_status(out_dir / phase_cfg.phase.name) if resumed else ("new", None)
        run_steps = (sum(steps[:i]), sum(steps))
        parts = prepare(phase_cfg, pipe, previous, with_logger=status != "finished", data=data, run_steps=run_steps)
        if status == "finished":  # rebuilt exactly as it ended, so the next phase starts from the same weights
            restore_weights(parts.module, state)
            summaries.append(json.loads((out_dir / phase_cfg.phase.name / "summary.json").read_text()))
            log.info(
                "Phase %r finished before the interruption: its weights are restored from %s",
                phase_cfg.phase.name,
                state,
            )
        else:
            summaries.append(fit(parts, state))
        if parts.trainer.is_global_zero:  # under DDP every rank runs this; only rank 0 writes
            write_json(parts.out_dir / phase_cfg.phase.name / "summary.json", summaries[-1])
            write_model_card(
                parts.out_dir / phase_cfg.phase.name,
                phase_cfg,
                summaries[-1],
                data.report.concepts,
                validation_prompts(phase_cfg, data),
            )
        pipe, previous = parts.pipe, phase_cfg.phase.name
    if len(summaries) == 1:
        summary = summaries[0]
    else:
        summary = {
            "name": cfg.name,
            "phases": summaries,
            "train_seconds": round(sum(s["train_seconds"] for s in summaries), 2),
        }
    if parts.trainer.is_global_zero:
        write_json(out_dir / "summary.json", summary)
    best = [s["likeness"]["best_dir"] for s in summaries if (s.get("likeness") or {}).get("best_dir")]
    recommended = f" Recommended checkpoint: {', '.join(best)}." if best else ""  # the likeness meter's
    log.info("Done in %.1f s. Summary: %s.%s", summary["train_seconds"], out_dir / "summary.json", recommended)
    return summary


def optimized_value(summary: dict, metric: str | None) -> float | None:
    """The final value of `metric` in a run summary (the last phase's), for hyper-parameter sweepers."""
    if not metric:
        return None
    final = (summary["phases"][-1] if "phases" in summary else summary).get("final_metrics", {})
    if metric not in final:
        raise ConfigError(f"optimized_metric={metric!r} is not among the run's final metrics {sorted(final)}.")
    return final[metric]
