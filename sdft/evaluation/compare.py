"""The compare report: after `+experiment=compare` (a multirun of conf/variant/ jobs), evaluate every job's outputs
(each phase of a multi-phase job is one row), the untouched base and the real images, into <sweep dir>/report/.

Runs as a Hydra callback at the end of the multirun; by hand: `sdft eval compare <sweep dir>`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback

from sdft.errors import ConfigError
from sdft.evaluation.evaluate import evaluate_targets
from sdft.evaluation.report import write_report
from sdft.evaluation.targets import read_run, run_targets

log = logging.getLogger(__name__)


def finished_jobs(sweep_dir: Path) -> list[Path]:
    jobs = [p.parent for p in sweep_dir.glob("*/summary.json")]
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def budget_notes(targets) -> list[str]:
    """Say how many steps each training phase had, and flag phases that differ (an unfair comparison)."""
    steps = {s["phase"] if len(t.phases) > 1 else t.label: s["steps"] for t in targets for s in t.phases}
    distinct = sorted(set(steps.values()))
    if len(distinct) == 1:
        note = f"Budget: every training phase ran {distinct[0]} steps with the same seed"
    else:
        note = "**Unequal budgets**: " + ", ".join(f"{k} {v}" for k, v in steps.items())
    return [note + "; DreamBooth+LoRA holds two phases (DreamBooth, then a LoRA of the same budget on top)."]


def write_compare_report(sweep_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Evaluate every finished job of the sweep and write the report; returns the files written."""
    sweep = Path(sweep_dir)
    jobs = finished_jobs(sweep)
    if not jobs:
        raise ConfigError(f"{sweep}: no finished job (no */summary.json); nothing to compare.")
    cfg, _ = read_run(jobs[0])
    targets = [t for job in jobs for t in run_targets(job, all_phases=True)]
    labels = [t.label for t in targets]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{sweep}: two runs share a label ({labels}); give each variant its own eval.label.")
    out = Path(out) if out else sweep / "report"
    rows, results, evaluator = evaluate_targets(targets, cfg, out, with_base=True)
    return write_report(rows, results, evaluator, out, budget_notes(targets))


class CompareReport(Callback):
    """Hydra callback: writes the compare report when the multirun ends."""

    def on_multirun_end(self, config, **kwargs) -> None:
        paths = write_compare_report(config.hydra.sweep.dir)
        print(f"Compare report: {paths[0]}")


if __name__ == "__main__":  # the command line moved to sdft/cli/ (issue 27)
    from sdft.errors import command_moved

    command_moved("sdft.evaluation.compare", "sdft eval compare")
