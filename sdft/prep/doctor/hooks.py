"""The doctor where datasets are used: a training run's cheap checks at start (`data.doctor: warn | fatal | off`), and
the full doctor on the sets `sdft data prepare` wrote."""

from __future__ import annotations

import logging
from pathlib import Path

from sdft.errors import DataError
from sdft.prep.doctor.findings import Severity
from sdft.prep.doctor.inputs import from_report, native_size

log = logging.getLogger("sdft.doctor")


def at_start(phases, datas) -> None:
    """Each phase's cheap checks (no pixels, about a millisecond per image); severe findings are logged before any
    model loads, or with data.doctor=fatal raise one DataError listing them."""
    from sdft.prep.doctor.run import cheap

    severe = []
    for cfg, data in zip(phases, datas):
        mode = str(getattr(cfg.data.doctor, "value", cfg.data.doctor))
        if mode == "off":
            continue
        found = [
            f
            for f in cheap(from_report(data.report, cfg.phase.name, native_size(cfg.model)))
            if f.severity == Severity.severe
        ]
        severe += [(cfg.phase.name, mode, f) for f in found]
    for phase, _, f in severe:
        log.warning("data doctor (phase %s): %s", phase, f.line())
    fatal = [f for _, mode, f in severe if mode == "fatal"]
    if fatal:
        raise DataError(
            f"data.doctor=fatal: {len(fatal)} severe finding(s) in the dataset (listed above; `sdft data doctor` shows "
            f"all); fix them or set data.doctor=warn. First: {fatal[0].message}"
        )
    if severe:
        log.warning("data doctor: %d severe finding(s); `sdft data doctor` reports all checks", len(severe))


def after_prepare(out: Path, sets: list[str], faces: bool = True) -> list[str]:
    """The doctor on each set `sdft data prepare` wrote (OUT/face, OUT/body, ...): reports OUT/doctor.json and
    OUT/doctor.html (beside the sets, not in them); returns the lines to print."""
    from sdft.prep.check import load_data_config
    from sdft.errors import ConfigError
    from sdft.prep.doctor.html import write_html
    from sdft.prep.doctor.report import text_lines, write_json
    from sdft.prep.doctor.run import DoctorOptions, doctor
    from sdft.prep.doctor.inputs import from_data_settings

    datasets = []
    for name in sets:
        folder = out / name
        if folder.is_dir() and any(folder.iterdir()):
            datasets.append(from_data_settings(load_data_config(str(folder), f"photo of {name}"), name))
    if not datasets:
        return []
    try:
        result = doctor(datasets, DoctorOptions(faces=faces))
    except ConfigError as err:  # dlib missing: the rest of the doctor still runs
        log.warning("%s; face checks skipped", err)
        result = doctor(datasets, DoctorOptions(faces=False))
    write_json(result, out / "doctor.json")
    write_html(result, out / "doctor.html")
    return text_lines(result, 20) + [f"Doctor report: {out / 'doctor.json'}, {out / 'doctor.html'}"]
