"""Run the checks over one or more datasets: `cheap` (sizes, captions, balance, files: no pixels; what a training run
does at start) and `doctor` (everything, each image decoded once)."""

from __future__ import annotations

import base64
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from sdft.data.images import load_rgb
from sdft.prep.doctor import balance, captions, duplicates, faces, files, quality
from sdft.prep.doctor.findings import Finding, Severity, worst_first
from sdft.prep.doctor.inputs import DoctorData

log = logging.getLogger(__name__)

WORK_SIDE = 1024  # images are decoded once at up to this long side; each check resizes from there
THUMB_SIDE = 160


@dataclass
class DoctorOptions:
    pixels: bool = True  # blur, exposure, near-duplicates
    faces: bool = True  # dlib face checks (the `faces` extra)
    tokenizer: str | None = None  # exact caption token counts (else a lower bound)
    thumbnails: bool = True  # for the HTML page


@dataclass
class DoctorResult:
    datasets: list[DoctorData]
    findings: list[Finding]
    sets: list[dict]
    thumbs: dict[Path, str] = field(default_factory=dict)  # image -> data URI (JPEG)
    seconds: dict[str, float] = field(default_factory=dict)  # time per check, for the benchmark

    @property
    def severe(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == Severity.severe]

    def count(self, severity: Severity) -> int:
        return sum(f.severity == severity for f in self.findings)


def cheap(data: DoctorData, counter: captions.TokenCounter | None = None) -> list[Finding]:
    """The checks that need no pixels: unreadable files, exact duplicates, sizes vs buckets, captions, balance."""
    return (
        files.check(data)
        + duplicates.exact(data)
        + quality.size_findings(data)
        + captions.check(data, counter)
        + balance.check(data)
    )


def thumbnail(img: Image.Image) -> str:
    small = img.copy()
    small.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def doctor(datasets: list[DoctorData], options: DoctorOptions | None = None) -> DoctorResult:
    """Every check over every dataset; findings worst first."""
    opts = options or DoctorOptions()
    seconds: dict[str, float] = {}

    def timed(name, fn, *args):
        start = time.perf_counter()
        value = fn(*args)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        return value

    counter = captions.TokenCounter(timed("load tokenizer", captions.load_tokenizer, opts.tokenizer))
    meter = timed("load face model", faces.FaceMeter) if opts.faces else None
    findings, sets, thumbs = [], [], {}
    for data in datasets:
        findings += timed("files, sizes, captions, balance", cheap, data, counter)
        for row in balance.sets(data):
            sets.append({"dataset": data.label, **row})
        hashes, pixels, infos = {}, {}, {}
        if opts.pixels or opts.faces or opts.thumbnails:
            for item in data.items:
                img = timed("decode", load_rgb, item.path, tuple(data.settings.background), (WORK_SIDE // 2,) * 2)
                img.thumbnail((WORK_SIDE, WORK_SIDE))
                if opts.pixels:
                    hashes[item.path] = timed("perceptual hash", duplicates.measure, item, img)
                    pixels[item.path] = timed("blur, exposure", quality.measure, item, img)
                if meter is not None and not item.is_reg:
                    infos[item.path] = timed("faces", meter.measure, item, img)
                if opts.thumbnails:
                    thumbs[item.path] = thumbnail(img)
        if opts.pixels:
            near = [f for f in timed("near-duplicates", duplicates.check, data, hashes) if f.check != "duplicate"]
            findings += near + quality.pixel_findings(data, pixels)
        if meter is not None:
            findings += timed("faces", faces.check, data, infos)
    return DoctorResult(datasets, worst_first(findings), sets, thumbs, {k: round(v, 3) for k, v in seconds.items()})
