"""One phase wired exactly as `run` wires it (sdft.run.train.checked_phases, then sdft.run.wiring.prepare), for tests
that drive the parts themselves."""

from __future__ import annotations

from sdft.run.train import as_config, checked_phases
from sdft.run.wiring import RunParts, prepare


def prepare_for_test(cfg, pipe=None, previous: str | None = None, **kwargs) -> RunParts:
    """`cfg`: a single-phase config (a composed one, or one of phase_configs' phases): typed, checked, scanned, then
    wired by the run's own functions; `kwargs` go to `prepare` (with_logger, run_steps)."""
    (phase,), (data,) = checked_phases(as_config(cfg))
    return prepare(phase, data, pipe, previous, **kwargs)
