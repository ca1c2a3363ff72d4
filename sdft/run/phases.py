"""Phases: one run trains several adapters in order (e.g. face, then body), each with its own config sections."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError

from sdft.config import PHASE_SECTIONS
from sdft.errors import ConfigError


def phase_configs(cfg: DictConfig) -> list[DictConfig]:
    """The full config of every phase: the run's config with the phase's overrides merged on (typed, so typos fail).

    Without `phases`, the run is the single `phase`. Every phase is checked here, before any training.
    """
    phases = list(cfg.phases) or [cfg.phase]
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise ConfigError(f"phase names must be unique (they are output folders and adapter names): {names}")
    out = []
    for i, phase in enumerate(phases):
        unknown = set(phase.overrides) - set(PHASE_SECTIONS)
        if unknown:
            raise ConfigError(
                f"phase {phase.name!r}: overrides for {sorted(unknown)} are not allowed; "
                f"a phase can set {list(PHASE_SECTIONS)}."
            )
        if i == 0 and phase.start in ("continue", "stack", "merge") and not phase.init_lora:
            raise ConfigError(
                f"phase {phase.name!r} is first and start={phase.start.value}, but there is no previous "
                "adapter: set phase.init_lora=<LoRA file> or start=fresh."
            )
        if phase.init_lora and phase.start == "fresh":
            raise ConfigError(
                f"phase {phase.name!r}: init_lora needs start=continue, stack or merge (fresh would drop it)."
            )
        try:
            merged = OmegaConf.merge(cfg, OmegaConf.to_container(phase.overrides))
        except ConfigKeyError as err:
            from sdft.run.checks import moved_key_error

            moved = moved_key_error(err.full_key)
            if moved is None:
                raise
            raise ConfigError(f"phase {phase.name!r}: {moved}") from None
        merged.phase = OmegaConf.merge(
            merged.phase, {"name": phase.name, "start": phase.start, "init_lora": phase.init_lora, "overrides": {}}
        )
        merged.phases = []
        out.append(merged)
    return out
