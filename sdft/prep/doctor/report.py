"""The doctor's text report (a line per finding, worst first, with what to do) and its JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from sdft.atomic import write_text
from sdft.prep.doctor.findings import Severity
from sdft.prep.doctor.run import DoctorResult


def text_lines(result: DoctorResult, limit: int | None = None) -> list[str]:
    images = sum(len(d.items) for d in result.datasets)
    lines = [
        f"Doctor: {images} images in {len(result.sets)} set(s); {result.count(Severity.severe)} severe, "
        f"{result.count(Severity.warn)} warnings, {result.count(Severity.info)} notes."
    ]
    for row in result.sets:
        lines.append(
            f"  [{row['kind']}] {row['dataset']}: {row['set']}: {row['images']} images x {row['repeats']} repeats "
            f"= {row['samples']} samples per epoch"
        )
    shown = result.findings if limit is None else result.findings[:limit]
    lines += [f.line() for f in shown]
    if len(shown) < len(result.findings):
        lines.append(f"... and {len(result.findings) - len(shown)} more (see the JSON / HTML report)")
    return lines


def to_dict(result: DoctorResult) -> dict:
    return {
        "datasets": [
            {
                "label": d.label,
                "images": [
                    {
                        "file": str(i.path),
                        "set": i.name,
                        "size": list(i.size),
                        "bucket": list(i.bucket),
                        "class": i.is_reg,
                    }
                    for i in d.items
                ],
                "resolution": d.settings.resolution,
                "enable_bucket": bool(d.settings.enable_bucket),
            }
            for d in result.datasets
        ],
        "sets": result.sets,
        "counts": {s.name: result.count(s) for s in Severity},
        "findings": [f.to_dict() for f in result.findings],
        "seconds": result.seconds,
    }


def write_json(result: DoctorResult, path: Path) -> Path:
    write_text(path, json.dumps(to_dict(result), indent=2))
    return path
