"""`sdft eval checkpoints RUN`: the likeness meter on a finished run's saved checkpoints (also a run trained before
the meter existed): per phase, every `checkpoints/step_*/` folder and the final `lora/`, each loaded onto the run's
base (sdft/generation/generator.py: any LoRA kind, checked to fit) and sampled with the run's validation settings
through the validation grid's sampler. Everything is measured before anything is written; then the same table,
chart, recommendation and `<phase>/best/` as during training."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

from omegaconf import OmegaConf

from sdft.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def phase_checkpoints(phase_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of each saved checkpoint holding a LoRA file, then the final `lora/` (step from summary.json)."""
    from sdft.adapters.formats import LORA_WEIGHT_NAME

    found = []
    for folder in sorted((phase_dir / "checkpoints").glob("step_*")):
        if (folder / LORA_WEIGHT_NAME).is_file() and folder.name[5:].isdigit():
            found.append((int(folder.name[5:]), folder))
    final = phase_dir / "lora"
    summary = phase_dir / "summary.json"
    if (final / LORA_WEIGHT_NAME).is_file() and summary.is_file():
        import json

        found.append((int(json.loads(summary.read_text())["steps"]), final))
    return found


def same_base(run_model: str, given: str) -> bool:
    a, b = Path(run_model).expanduser(), Path(given).expanduser()
    if a.exists() and b.exists():
        return a.resolve() == b.resolve()
    return run_model == given


def full_config(phase_cfg):
    """The phase's saved config on today's schema (a run from before the meter gets the meter's defaults; keys that
    have moved since, such as optim.weight_decay, are left out)."""
    from sdft.config import SdftConfig, without_moved_keys

    saved = OmegaConf.to_container(phase_cfg, resolve=False) if OmegaConf.is_config(phase_cfg) else phase_cfg
    return OmegaConf.merge(OmegaConf.structured(SdftConfig), without_moved_keys(saved))


def evaluate_checkpoints(
    run_dir: str | Path, phase: str | None = None, model: str | None = None, metric: str | None = None, device=None
) -> list[dict]:
    """Measure, write and recommend for each phase with checkpoints; returns each phase's {phase, recommended, ...}."""
    from sdft.evaluation.targets import read_run

    run = Path(run_dir).expanduser()
    cfg, summaries = read_run(run)
    if model is not None and not same_base(cfg.model.path, model):
        raise ConfigError(
            f"{run} was trained on base {cfg.model.path!r}, not on {model!r}: its checkpoints are scored on their own "
            "base; drop --model (or, if the base folder moved, fix model.path in the run's config.yaml)."
        )
    names = [s["phase"] for s in summaries]
    if phase is not None and phase not in names:
        raise ConfigError(f"{run}: no phase {phase!r}; phases: {names}.")
    jobs = []
    for name in [phase] if phase else names:
        phase_dir = run / name
        saved = phase_checkpoints(phase_dir)
        if saved:
            path = phase_dir / "config.yaml"
            jobs.append((full_config(OmegaConf.load(path) if path.is_file() else cfg), phase_dir, saved))
    if not jobs:
        raise DataError(
            f"{run}: no saved LoRA checkpoints (checkpoints/step_*/ or lora/ with {names}); train with "
            "callbacks.checkpoint_every_n_steps=N to have checkpoints to compare."
        )
    measured = [measure_phase(job_cfg, phase_dir, saved, metric, device) for job_cfg, phase_dir, saved in jobs]
    results = []
    for record in measured:  # written only once every phase is measured
        record.write()
        best = record.copy_best()
        chosen = record.recommended()
        results.append(
            {
                "phase": record.phase_dir.name,
                "recommended_step": chosen["step"],
                "recommended_checkpoint": chosen["checkpoint"],
                "best_dir": str(best),
                "table": str(record.out_dir / "likeness.csv"),
            }
        )
    return results


def measure_phase(cfg, phase_dir: Path, saved: list[tuple[int, Path]], metric: str | None, device):
    from sdft.callbacks.likeness import LikenessCallback
    from sdft.callbacks.pipeline_parts import PipelineParts
    from sdft.callbacks.validation_grid import ValidationGrid
    from sdft.config import LossConfig, OptimConfig
    from sdft.data.phase_data import phase_data, phase_settings
    from sdft.generation.generator import Generator
    from sdft.generation.params import LoraSpec
    from sdft.families import family_parts
    from sdft.models.loading import make_noise_scheduler
    from sdft.training.module import DreamBoothModule, StepModels

    if metric is not None:
        cfg.callbacks.likeness.metric = metric
    data = phase_data(cfg, phase_settings(cfg))  # the run's instance images and held-out split, checked
    gen = Generator(OmegaConf.to_object(cfg.model), device=device)
    pipe = gen.pipe
    gen.set_loras([LoraSpec(str(saved[0][1]))])  # a LoRA that does not fit this base fails here, before scoring
    family = family_parts(pipe, cfg)
    parts = PipelineParts(pipe.tokenizer, pipe.scheduler, family.tokenizer_2, cfg.model.clip_skip)
    grids = ValidationGrid(phase_dir, [], cfg.callbacks, cfg.data.resolution, parts)
    checkpoint = SimpleNamespace(every_n_steps=0, phase_dir=phase_dir, keep=set(), final_path=None)
    meter = LikenessCallback.from_config(cfg, phase_dir, grids, checkpoint, data.instances, data.held_out)
    module = (
        DreamBoothModule(
            StepModels(
                pipe.unet,
                pipe.text_encoder,
                pipe.vae,
                make_noise_scheduler(pipe),
                text_encoder_2=family.text_encoder_2,
                conditioning=family.conditioning,
                clip_skip=cfg.model.clip_skip,
            ),
            OptimConfig(),
            LossConfig(),
        )
        .to(gen.device)
        .eval()
    )
    tokenizer = family.tokenizer or pipe.tokenizer
    trainer = SimpleNamespace(datamodule=SimpleNamespace(instances=data.instances, tokenizer=tokenizer), loggers=[])
    for step, folder in saved:
        gen.set_loras([LoraSpec(str(folder))])
        values = meter.meter.measure(lambda prompts, seeds: grids.sample_pairs(module, prompts, seeds))
        values["val_loss"] = round(meter.val_loss.measure(trainer, module), 6) if meter.val_loss else None
        meter.record.add(step, folder, values)
        log.info("%s step %d: %s", phase_dir.name, step, values)
    return meter.record
