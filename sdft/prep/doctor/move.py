"""`--move-to DIR`: the images of the severe (or chosen) findings moved out of the dataset, asked for explicitly.

The doctor never changes the dataset on its own; the list of what would move is in the JSON report. Moves keep the
path below the dataset folder (so nothing collides) and take the caption / mask files beside each image along."""

from __future__ import annotations

import shutil
from pathlib import Path

from sdft.data.captions import KNOWN_CAPTION_EXTENSIONS, caption_path
from sdft.data.images import MASK_SUFFIX
from sdft.errors import ConfigError
from sdft.prep.doctor.findings import Finding, Severity


# findings about the image itself; a caption finding (e.g. a missing trigger) is fixed in the caption, not by moving
IMAGE_CHECKS = {"unreadable", "blur", "exposure", "resolution", "aspect", "identity", "faces"}


def to_move(findings: list[Finding], checks: set[str] | None = None) -> list[Path]:
    """Images named by severe findings about the image (or by findings of the given checks), each once, in report
    order."""
    out: list[Path] = []
    for f in findings:
        wanted = f.check in checks if checks else f.severity == Severity.severe and f.check in IMAGE_CHECKS
        for p in f.files if wanted else ():
            if p not in out:
                out.append(p)
    return out


def move(paths: list[Path], roots: list[Path], dest: Path) -> list[tuple[Path, Path]]:
    """Move each image (and its sidecars) to dest/<path below its dataset root>; returns (from, to) pairs."""
    dest = dest.expanduser()
    for root in roots:
        if dest.resolve() == root.resolve() or root.resolve() in dest.resolve().parents:
            raise ConfigError(f"--move-to {dest} is inside the dataset {root}: choose a folder outside it.")
    moved = []
    for p in paths:
        root = next((r for r in roots if r.resolve() in p.resolve().parents), p.parent)
        target = dest / p.resolve().relative_to(root.resolve())
        target.parent.mkdir(parents=True, exist_ok=True)
        sidecars = [caption_path(p, e) for e in KNOWN_CAPTION_EXTENSIONS] + [p.with_name(p.stem + MASK_SUFFIX)]
        for f in [p] + [s for s in sidecars if s.is_file()]:
            shutil.move(str(f), str(target.with_name(f.name)))
        moved.append((p, target))
    return moved
