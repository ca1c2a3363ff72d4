"""`resume=auto` / `resume=<run folder>`: find the run to continue, check it is the same run, and where each phase is.

A run folder is unfinished while it has no summary.json. Each phase folder is then one of
- finished: it has summary.json and final_state.ckpt (its trained weights): it is rebuilt, not trained again;
- started: its newest checkpoints/step_N/state.ckpt is continued (weights, optimizer, lr schedule, step, data order);
- new: trained from the start.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sdft.atomic import remove_stale_temps
from sdft.callbacks.lora_checkpoint import FINAL_STATE_NAME, STATE_NAME
from sdft.errors import ConfigError

log = logging.getLogger(__name__)

# what decides the trained weights: a resumed run must have the same values (max_steps may grow: train longer)
SAME_SECTIONS = ("seed", "model", "data", "adapter", "phase", "phases", "prior", "optim", "loss")
SAME_TRAINER_KEYS = ("precision", "accumulate_grad_batches", "gradient_clip_val")


def last_state(phase_dir: Path) -> Path | None:
    states = sorted(phase_dir.glob(f"checkpoints/step_*/{STATE_NAME}"))
    return states[-1] if states else None


def phase_status(phase_dir: Path) -> tuple[str, Path | None]:
    """("finished", final_state.ckpt) | ("started", newest state.ckpt) | ("new", None)."""
    final = phase_dir / FINAL_STATE_NAME
    if (phase_dir / "summary.json").is_file() and final.is_file():
        return "finished", final
    state = last_state(phase_dir)
    return ("started", state) if state else ("new", None)


def has_progress(run_dir: Path) -> bool:
    return any(phase_status(p)[0] != "new" for p in run_dir.iterdir() if p.is_dir())


def candidates(cfg: DictConfig, current: Path) -> list[Path]:
    """Where resume=auto looks: output_dir itself if set; else earlier Hydra runs of this name (in a multirun, the
    same job number of earlier sweeps). Only folders: a file beside the runs (a run1.log) is none."""
    if cfg.output_dir:
        return [current]
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return [d / current.name for d in current.parent.parent.iterdir() if d != current.parent and d.is_dir()]
    return [d for d in current.parent.iterdir() if d != current and d.is_dir()]


def find_run(cfg: DictConfig, current: Path) -> Path | None:
    """The run folder to continue, or None (resume unset, or resume=auto found nothing unfinished)."""
    if not cfg.resume:
        return None
    if cfg.resume != "auto":
        run = Path(cfg.resume).expanduser()
        if not (run / "config.yaml").is_file():
            raise ConfigError(
                f"resume={cfg.resume}: not a run folder (no config.yaml). Give the folder a run wrote "
                "(outputs/<name>/<date_time>), or resume=auto."
            )
        if (run / "summary.json").is_file():
            raise ConfigError(f"resume={cfg.resume}: that run has finished (summary.json is there); nothing to resume.")
        return without_stale_temps(run)
    looked = candidates(cfg, current)
    runs = [
        d for d in looked if (d / "config.yaml").is_file() and not (d / "summary.json").is_file() and has_progress(d)
    ]
    if not runs:
        where = current if cfg.output_dir else f"{len(looked)} earlier run folder(s) beside {current}"
        log.warning(
            "resume=auto: nothing to continue in %s (looked for a run folder with config.yaml, no "
            "summary.json, and a <phase>/checkpoints/step_*/%s or finished phase); starting a new run.",
            where,
            STATE_NAME,
        )
        return None
    return without_stale_temps(max(runs, key=lambda d: (d / "config.yaml").stat().st_mtime))


def without_stale_temps(run: Path) -> Path:
    """The run folder, rid of the temp files a killed write left in it (sdft/atomic.py's naming)."""
    removed = remove_stale_temps(run)
    if removed:
        log.info("resume: removed %d temp file(s) an interrupted write left in %s", len(removed), run)
    return run


def check_same_run(run: Path, cfg: DictConfig) -> None:
    """Refuse to continue a run with other training settings: the result would be neither run."""
    saved = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=True)
    now = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    differ = [k for k in SAME_SECTIONS if saved.get(k) != now.get(k)]
    differ += [
        f"trainer.{k}" for k in SAME_TRAINER_KEYS if saved.get("trainer", {}).get(k) != now.get("trainer", {}).get(k)
    ]
    if differ:
        raise ConfigError(
            f"resume: the run in {run} was trained with other values of {differ}. Resume with the same "
            f"config and overrides (its config is {run / 'config.yaml'}), or drop resume= to start anew."
        )


def untrusted(state: Path, err: Exception) -> ConfigError:
    return ConfigError(
        f"resume: {state} holds more than tensors and plain values (a pickle that could run code, or a "
        f"damaged file: {str(err).splitlines()[0][:200]}); not loaded. Resume only run folders you "
        "trust, or delete that checkpoint (and its phase's summary.json) to train the phase again."
    )


def load_state(state: Path) -> dict:
    """A checkpoint sdft wrote, read with weights_only=True: tensors and plain values only, never code."""
    try:
        return torch.load(state, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise untrusted(state, err) from None


def restore_weights(module, state: Path) -> None:
    """Load a finished phase's trained weights (final_state.ckpt) into its freshly set-up module."""
    checkpoint = load_state(state)
    module.on_load_checkpoint(checkpoint)  # fails clearly if the adapter config does not match
    module.load_state_dict(checkpoint["state_dict"], strict=False)
