"""What the Train tab shows beside a checked form (sdft/ui/train.py `inspect_form`), free of gradio: the data doctor's
cheap checks (the ones train.py runs at start, sdft/prep/doctor/hooks.py) and the plan's headline (sdft/run/plan)."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

from sdft.prep.doctor.findings import Finding, Severity, worst_first
from sdft.run.plan.devices import GPUS

DEVICES = ["cpu", *GPUS]  # the plan's device table (sdft/run/plan/devices.py)
SHOWN_FILES = 3
DOCTOR_SET = re.compile(r"^\+{0,2}data\.doctor=")


@dataclass
class PhaseFinding:
    phase: str
    finding: Finding


def doctor_findings(checked) -> list[PhaseFinding]:
    """Every phase's cheap doctor checks (no pixels: files, exact duplicates, sizes, captions, balance), worst first;
    phases with data.doctor=off are left out, as train.py leaves them."""
    from sdft.prep.doctor.inputs import from_report, native_size
    from sdft.prep.doctor.run import cheap

    found = []
    for cfg, data in zip(checked.phases, checked.datas):
        if str(getattr(cfg.data.doctor, "value", cfg.data.doctor)) == "off":
            continue
        found += [
            PhaseFinding(cfg.phase.name, f)
            for f in cheap(from_report(data.report, cfg.phase.name, native_size(cfg.model)))
        ]
    order = {id(f): i for i, f in enumerate(worst_first([p.finding for p in found]))}
    return sorted(found, key=lambda p: order[id(p.finding)])


def doctor_gate(checked, overrides: list[str]) -> None:
    """Refuse severe findings with train.py's data.doctor=fatal message (sdft/prep/doctor/hooks.py `at_start`). The
    page is stricter than train.py's default (warn: logged, the run goes on): severe findings block Train unless the
    overrides set data.doctor themselves (data.doctor=warn trains anyway, as the message says)."""
    from sdft.prep.doctor.hooks import at_start

    phases = [copy.deepcopy(p) for p in checked.phases]
    if not any(DOCTOR_SET.match(o) for o in overrides):
        for phase in phases:
            if str(getattr(phase.data.doctor, "value", phase.data.doctor)) == "warn":
                phase.data.doctor = "fatal"
    at_start(phases, checked.datas)


def _files(files: list[Path]) -> str:
    names = [f"`{p.name}`" for p in files[:SHOWN_FILES]]
    more = f" +{len(files) - SHOWN_FILES}" if len(files) > SHOWN_FILES else ""
    return f" ({', '.join(names)}{more})" if names else ""


def doctor_markdown(found: list[PhaseFinding], several_phases: bool) -> str:
    """A compact list, worst first: severity, check, message, what to do, the files concerned."""
    if not found:
        return "**Data doctor:** no findings (cheap checks: files, duplicates, sizes, captions, balance)."
    counts = {s: sum(p.finding.severity == s for p in found) for s in Severity}
    head = ", ".join(f"{n} {s.name}" for s, n in sorted(counts.items(), reverse=True) if n)
    lines = [f"**Data doctor:** {head} (`sdft data doctor` adds the pixel and face checks)"]
    for p in found:
        f = p.finding
        where = f"{p.phase}: " if several_phases else ""
        lines.append(f"- **{f.severity.name.upper()}** {where}{f.check}: {f.message} → {f.advice}{_files(f.files)}")
    return "\n".join(lines)


def plan_headline(checked, device_name: str = "cpu") -> str:
    """`sdft plan`'s headline for the checked run on a device of the plan's table (a trace of one training step:
    seconds on the toy base). The phases are copied: the forecast may set fields on them."""
    from sdft.run.plan.devices import device
    from sdft.run.plan.plan import make_plan
    from sdft.run.plan.report import headline

    plan = make_plan(checked.cfg, device(device_name), ([copy.deepcopy(p) for p in checked.phases], checked.datas))
    return headline(plan)
