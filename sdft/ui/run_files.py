"""What the Train / Runs tabs read from a run folder beyond progress: the likeness meter's chart and recommended
checkpoint (sdft/callbacks/likeness.py: `<phase>/likeness/likeness.{json,png}`, summary.json's `likeness`), and the
run's own saved overrides (`<run>/.hydra/overrides.yaml`) to resume a run started anywhere."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from sdft.callbacks.controls import running
from sdft.errors import ConfigError
from sdft.evaluation.likeness import LIKENESS_DIR
from sdft.evaluation.likeness_table import TABLE_NAME

OVERRIDES = Path(".hydra") / "overrides.yaml"
# set again by the page for the folder it resumes (sdft/ui/train.py run_overrides), so dropped from the saved ones
PLACED = re.compile(r"^\+{0,2}(resume|output_dir|hydra\.run\.dir)=")


@dataclass
class Likeness:
    chart: Path | None  # the newest likeness.png of the run's phases
    lines: list[str]  # per measured phase: its recommended checkpoint so far


def _number(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def likeness(run_dir: str | Path) -> Likeness:
    """The meter's latest table and chart, per phase (rewritten after each measurement while the run trains)."""
    run = Path(run_dir)
    lines = []
    for table in sorted(run.glob(f"*/{LIKENESS_DIR}/{TABLE_NAME}.json")):
        phase = table.parent.parent.name
        try:
            doc = json.loads(table.read_text())
        except (OSError, ValueError):  # being replaced: the next refresh reads it
            continue
        chosen, measured = doc.get("recommended"), len(doc.get("rows") or [])
        if chosen:
            lines.append(
                f"{phase}: recommended checkpoint step {chosen['step']} ({doc.get('metric', '')} likeness "
                f"{_number(chosen.get('likeness'))}, of {measured} measured): `{chosen['checkpoint']}`"
            )
        else:
            lines.append(f"{phase}: no checkpoint recommended yet ({measured} measured)")
    charts = sorted(run.glob(f"*/{LIKENESS_DIR}/{TABLE_NAME}.png"), key=lambda p: p.stat().st_mtime)
    return Likeness(charts[-1] if charts else None, lines)


def recommended(summary: dict | None) -> list[str]:
    """A finished run's recommended checkpoint per phase, from summary.json (one phase, or `phases`)."""
    phases = (summary.get("phases") or [summary]) if summary else []
    lines = []
    for s in phases:
        meter = s.get("likeness") or {}
        if meter.get("recommended_step") is not None:
            where = meter.get("best_dir") or meter.get("recommended_checkpoint")
            lines.append(f"{s.get('phase', '?')}: recommended checkpoint step {meter['recommended_step']}: `{where}`")
    return lines


def saved_overrides(run_dir: str | Path) -> list[str]:
    """The overrides the run was started with (Hydra's `.hydra/overrides.yaml`), less resume / output folders."""
    path = Path(run_dir) / OVERRIDES
    if not path.is_file():
        raise ConfigError(
            f"{run_dir}: no {OVERRIDES} (not a folder train.py wrote?); resume it with its own command line: "
            f"python train.py ... resume={run_dir}"
        )
    saved = yaml.safe_load(path.read_text()) or []
    if not isinstance(saved, list):
        raise ConfigError(f"{path}: expected a list of overrides, got {type(saved).__name__}.")
    return [str(o) for o in saved if not PLACED.match(str(o))]


def resumable(run_dir: str | Path) -> Path:
    """The run folder, if a resume can continue it: unfinished, no live process; else one clear line."""
    run = Path(run_dir).expanduser()
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run folder (no config.yaml).")
    if (run / "summary.json").is_file():
        raise ConfigError(f"{run_dir}: that run has finished (summary.json is there); nothing to resume.")
    if running(run):
        raise ConfigError(f"{run_dir}: a training process is still running it; stop it first.")
    return run


def resume_overrides(run_dir: str | Path) -> list[str]:
    """`python train.py <its saved overrides> resume=<dir>` into the same folder, for a run started anywhere."""
    from sdft.ui.train import quote_value, run_overrides

    run = resumable(run_dir)
    return run_overrides([*saved_overrides(run), f"resume={quote_value(str(run))}"], run)
