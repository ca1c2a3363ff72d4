"""Exact duplicates (same bytes, from the scan's sha256) and near-duplicates (perceptual hashes, `imagehash`).

Near-duplicates (a re-save, a resize, a small crop, a colour tweak) are grouped into clusters: each image is linked to
every other whose pHash differs in at most `NEAR_BITS` of its 64 bits, and linked images form one cluster (union-find).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from sdft.prep.doctor.findings import Finding, Item, Severity
from sdft.prep.doctor.inputs import DoctorData

NEAR_BITS = 6  # of 64: re-saves, resizes, exposure changes of one shot are 0-4 apart; other shots of one subject 18+


def import_imagehash():
    try:
        import imagehash
    except ImportError as err:
        from sdft.errors import ConfigError

        raise ConfigError(
            'near-duplicate search needs imagehash: pip install imagehash (or: pip install -e ".[doctor]").'
        ) from err
    return imagehash


def measure(item: Item, img: Image.Image):
    """The image's 64-bit perceptual hash."""
    return import_imagehash().phash(img)


def clusters(hashes: dict[Path, object], limit: int = NEAR_BITS) -> list[list[Path]]:
    """Groups of images linked by pHash distances <= limit (single linkage), largest first; singletons left out."""
    paths = list(hashes)
    parent = list(range(len(paths)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(paths)):
        for j in range(i + 1, len(paths)):
            if hashes[paths[i]] - hashes[paths[j]] <= limit:
                parent[root(i)] = root(j)
    groups: dict[int, list[Path]] = {}
    for i, p in enumerate(paths):
        groups.setdefault(root(i), []).append(p)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), str(g[0])))


def exact(data: DoctorData) -> list[Finding]:
    return [
        Finding(
            "duplicate",
            Severity.warn,
            f"{len(group)} identical files (same bytes): each is trained on as a separate image",
            f"keep one ({group[0].name}) and remove the others, or lower its repeats",
            list(group),
        )
        for group in data.report.duplicates
    ]


def check(data: DoctorData, hashes: dict[Path, object]) -> list[Finding]:
    """Exact duplicates, and clusters of near-duplicates that are not all one exact group."""
    out = exact(data)
    same = [set(g) for g in data.report.duplicates]
    for group in clusters(hashes):
        if any(set(group) <= g for g in same):
            continue
        dists = [int(hashes[a] - hashes[b]) for k, a in enumerate(group) for b in group[k + 1 :]]
        out.append(
            Finding(
                "near-duplicate",
                Severity.warn,
                f"{len(group)} near-identical images (pHash distance {min(dists)}-{max(dists)} of 64 bits): "
                "the LoRA sees this shot more often than the others",
                "keep the best one, or give the set more variety (poses, places, light)",
                group,
                {"distances": dists},
            )
        )
    return out
