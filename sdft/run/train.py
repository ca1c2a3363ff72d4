"""run(cfg): check every phase's config, scan every phase's data once, then wire (sdft/run/wiring.py) and train each
phase in order on one loaded base."""

from __future__ import annotations

import json
import logging
import pickle
import time
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sdft.adapters.kinds import is_peft_kind
from sdft.adapters.model_card import write_model_card
from sdft.adapters.targets import TEXT_ENCODER_TARGETS, UNET_TARGETS, check_target_names
from sdft.atomic import write_text
from sdft.callbacks.fixed_noise_loss import FixedNoiseLoss
from sdft.callbacks.graceful_stop import stop_before_training
from sdft.callbacks.likeness import LikenessCallback
from sdft.callbacks.progress import quiet_library_bars
from sdft.config import SdftConfig
from sdft.data.folders import check_data_config
from sdft.data.phase_data import PhaseData, phase_data, phase_settings
from sdft.embeddings.training import check_embedding_config
from sdft.errors import ConfigError
from sdft.models.quantize import check_quantize
from sdft.prep.doctor.hooks import at_start as doctor_at_start
from sdft.run.callbacks import validation_prompts
from sdft.run.checks import check_values, typed_config
from sdft.run.loggers import close_loggers
from sdft.run.phases import phase_configs
from sdft.run.plan.headline import announce
from sdft.run.resume import check_same_run, find_run, phase_status, restore_weights, untrusted
from sdft.run.wiring import RunParts, output_dir, prepare
from sdft.training.ema import check_ema_config
from sdft.training.noise import check_zero_terminal_snr
from sdft.training.optimizers import optimizer_class, optimizer_node
from sdft.training.prior_prediction import check_base_prior

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


def check_config(cfg: DictConfig, settings: DictConfig) -> None:
    """Checks that need no model or data: fail before any long work. `settings`: the phase's resolved data settings
    (sdft.data.phase_data.phase_settings, as checked_phases resolves them)."""
    check_data_config(cfg.data, cfg.prior.enabled)
    check_values(cfg, settings)
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
    optimizer_class(
        optimizer_node(cfg.optim)
    )  # a missing package (bitsandbytes for adamw8bit too) fails here, naming it


def checked_phases(cfg: DictConfig) -> tuple[list[DictConfig], list[PhaseData]]:
    """Every phase's config (typed: `as_config` first) checked against its resolved data settings, then every phase's
    data scanned once (bad folders and images fail here, before any model loads)."""
    phases = phase_configs(cfg)
    resolved = [phase_settings(phase) for phase in phases]  # a kohya TOML is read once per phase, here
    for phase, settings in zip(phases, resolved):
        check_config(phase, settings.settings)
    return phases, [phase_data(phase, settings) for phase, settings in zip(phases, resolved)]


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, default=str))


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
    phases, datas = checked_phases(cfg)  # every phase's config, then every phase's data, before the first one trains
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
        parts = prepare(phase_cfg, data, pipe, previous, with_logger=status != "finished", run_steps=run_steps)
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
