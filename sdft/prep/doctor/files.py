"""Files: unreadable or truncated images (training stops on them by default) and files the scan ignores."""

from __future__ import annotations

from sdft.prep.doctor.findings import Finding, Severity
from sdft.prep.doctor.inputs import DoctorData


def check(data: DoctorData) -> list[Finding]:
    out = []
    stops = data.settings.on_bad_images == "error"
    for path, why in data.report.bad:
        out.append(
            Finding(
                "unreadable",
                Severity.severe,
                f"{path} cannot be read ({why})" + ("; training stops on it" if stops else "; training skips it"),
                "replace it with a good copy or remove it",
                [path],
            )
        )
    if data.report.ignored:
        shown = ", ".join(p.name for p in data.report.ignored[:5])
        out.append(
            Finding(
                "ignored",
                Severity.info,
                f"{len(data.report.ignored)} file(s) are not images and are not trained on ({shown})",
                "nothing to do, unless one was meant to be an image (check its extension)",
                list(data.report.ignored),
            )
        )
    return out
