"""A disk cache of traced steps: the fake-tensor trace of a training step (and a grid step) is the plan's only slow
part (a whole plan is ~10 s for the tiny model, ~11 s for SD 1.5, ~17 s for SDXL on one CPU core, imports
included; reading the entry saves the trace), and it depends only on the config,
the architecture, the traced size and the code. train.py's start-up headline traces the same run again and again
(a quickstart run, a resume, a sweep's jobs): from the second time on it reads the result here.

Key: SHA-256 over the config (without what cannot change a step: name, seed, output_dir, resume, the logger, eval
and card sections), the architecture's source and configs, the traced sizes and caches, the versions of torch,
diffusers and peft, and the content of every sdft module (a code change is a cache miss). Files:
`$SDFT_CACHE_DIR/plan_traces/<key>.json` (`~/.cache/sdft` without the variable); `SDFT_PLAN_CACHE=off` disables it."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from pathlib import Path

from omegaconf import OmegaConf

from sdft.atomic import write_text
from sdft.models.tiny import default_cache_dir
from sdft.run.plan.trace import GenerationTrace, StepTrace

log = logging.getLogger(__name__)
NOT_TRACED = ("name", "seed", "output_dir", "resume", "optimized_metric", "logger", "eval", "card")
SDFT_ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def code_digest() -> str:
    """The content of every sdft module (any change to the code that builds or steps the model is a miss)."""
    digest = hashlib.sha256()
    for path in sorted(SDFT_ROOT.rglob("*.py")):
        digest.update(str(path.relative_to(SDFT_ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cache_dir() -> Path:
    return default_cache_dir() / "plan_traces"


def trace_key(cfg, arch, size, latents_cached: bool, text_cached: bool, grid_size) -> str:
    import diffusers
    import peft
    import torch

    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for key in NOT_TRACED:
        config.pop(key, None)
    parts = {
        "config": config,
        "arch": [arch.kind, arch.source, arch.configs],
        "size": list(size),
        "caches": [latents_cached, text_cached],
        "grid": list(grid_size) if grid_size else None,
        "versions": [torch.__version__, diffusers.__version__, peft.__version__],
        "code": code_digest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def enabled() -> bool:
    return os.environ.get("SDFT_PLAN_CACHE", "on").lower() not in ("off", "0", "false", "no")


def load(key: str) -> tuple[StepTrace, GenerationTrace] | None:
    path = cache_dir() / f"{key}.json"
    if not enabled() or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return StepTrace(**data["step"]), GenerationTrace(**data["generation"])
    except (OSError, ValueError, TypeError, KeyError) as err:  # a damaged or older entry: trace again
        log.debug("plan trace cache: ignoring %s (%s)", path, err)
        return None


def store(key: str, step: StepTrace, generation: GenerationTrace) -> None:
    if not enabled():
        return
    try:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        data = {"step": dataclasses.asdict(step), "generation": dataclasses.asdict(generation)}
        write_text(folder / f"{key}.json", json.dumps(data))
    except OSError as err:  # a read-only home: the plan still works, it only traces each time
        log.debug("plan trace cache: not written (%s)", err)
