"""The report of `sdft data prepare`: report.json (everything), report.md (warnings listed by name, a table per
image) and preview.png (each source with its face box and crops), all written into the output folder."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from sdft.atomic import atomic_path
from sdft.prep.framing import MIN_SUBJECT
from sdft.data.images import load_rgb

if TYPE_CHECKING:  # annotations only: prepare.py imports this module to write its reports
    from sdft.prep.prepare import ImageResult, Preparer, PrepareOptions

THUMB = 192
COLOURS = {"face": (60, 140, 255), "body": (255, 150, 40), "full": (200, 200, 200), "detected": (40, 220, 80)}


def summary(results: list[ImageResult]) -> dict[str, list]:
    """The lists a person acts on, by file name."""
    return {
        "no_face": [r.file for r in results if r.size and r.faces == 0],
        "several_faces": [{"file": r.file, "faces": r.faces} for r in results if r.faces > 1],
        "subject_under_half": [
            {"file": r.file, "fraction": r.subject_fraction}
            for r in results
            if r.subject_fraction is not None and r.subject_fraction < MIN_SUBJECT
        ],
        "upscaled": [
            {"file": o.file, "source": r.file, "factor": o.upscaled} for r in results for o in r.outputs if o.upscaled
        ],
        "unreadable": [r.file for r in results if r.size is None],
        "not_written": [{"file": r.file, "set": s, "why": why} for r in results for s, why in r.skipped.items()],
    }


def markdown(
    src: Path, out: Path, opts: PrepareOptions, results: list[ImageResult], lists: dict, resizer: str, detector: str
) -> str:
    written = {s: sum(o.set == s for r in results for o in r.outputs) for s in opts.sets}
    lines = [
        f"# sdft data prepare: {src} -> {out}",
        "",
        f"- detector: {detector}; upscaling: {resizer}; masks: {opts.masks or 'none'}",
        "- written: " + ", ".join(f"{n} in {s}/" for s, n in written.items()),
        f"- captions copied for {sum(r.caption for r in results)} of {len(results)} images",
        "",
    ]
    sections = [
        ("No face found", [f"`{f}`" for f in lists["no_face"]]),
        ("Several faces", [f"`{d['file']}`: {d['faces']} faces" for d in lists["several_faces"]]),
        (
            "Subject fills less than 50 % of the frame (move closer or crop)",
            [f"`{d['file']}`: ~{d['fraction']:.0%}" for d in lists["subject_under_half"]],
        ),
        (
            "Upscaled",
            [f"`{d['file']}` (from `{d['source']}`): x{d['factor']:.2f} with {resizer}" for d in lists["upscaled"]],
        ),
        ("Not written", [f"`{d['file']}` {d['set']}: {d['why']}" for d in lists["not_written"]]),
        ("Unreadable", [f"`{f}`" for f in lists["unreadable"]]),
    ]
    for title, items in sections:
        lines.append(f"## {title}: {len(items)}")
        lines += [f"- {item}" for item in items] + [""]
    lines += [
        "## Images",
        "",
        "| image | resolution | faces | subject | written | notes |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        res = f"{r.size[0]}x{r.size[1]}" if r.size else "-"
        subj = f"{r.subject_fraction:.0%}" if r.subject_fraction is not None else "-"
        outs = ", ".join(f"{o.set}{' x%.2f' % o.upscaled if o.upscaled else ''}" for o in r.outputs) or "-"
        lines.append(f"| `{r.file}` | {res} | {r.faces} | {subj} | {outs} | {'; '.join(r.warnings) or ''} |")
    return "\n".join(lines) + "\n"


def short_flags(r: ImageResult) -> str:
    """What the contact sheet writes under a thumbnail: the framing warnings, briefly."""
    flags = ["no face"] if r.faces == 0 else [f"{r.faces} faces"] if r.faces > 1 else []
    if r.subject_fraction is not None and r.subject_fraction < MIN_SUBJECT:
        flags.append(f"subject {r.subject_fraction:.0%}")
    if any(o.upscaled for o in r.outputs):
        flags.append("upscaled")
    return ", ".join(flags)


def preview(src: Path, results: list[ImageResult], path: Path, limit: int = 64) -> Path:
    """A contact sheet: each source image with the detected face (green) and the face/body crops."""
    items = [r for r in results if r.size][:limit]
    cols = min(6, max(1, len(items)))
    rows = max(1, math.ceil(len(items) / cols))
    cell_h = THUMB + 28
    sheet = Image.new("RGB", (cols * THUMB, rows * cell_h), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for k, r in enumerate(items):
        img = load_rgb(src / r.file, target=(THUMB, THUMB))
        f = THUMB / max(r.size)
        img = img.resize((max(1, round(r.size[0] * f)), max(1, round(r.size[1] * f))))
        x0, y0 = (k % cols) * THUMB, (k // cols) * cell_h
        ox, oy = x0 + (THUMB - img.size[0]) // 2, y0 + (THUMB - img.size[1]) // 2
        sheet.paste(img, (ox, oy))
        for o in r.outputs:
            box = [ox + o.crop[0] * f, oy + o.crop[1] * f, ox + o.crop[2] * f - 1, oy + o.crop[3] * f - 1]
            draw.rectangle(box, outline=COLOURS[o.set], width=2)
        if r.face:
            x, y, w, h = r.face
            draw.rectangle([ox + x * f, oy + y * f, ox + (x + w) * f, oy + (y + h) * f], outline=COLOURS["detected"])
        draw.text((x0 + 2, y0 + THUMB), r.file[:30], fill=(255, 255, 255))
        draw.text((x0 + 2, y0 + THUMB + 12), short_flags(r)[:34], fill=(255, 200, 80))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def write_reports(src: Path, out: Path, opts: PrepareOptions, results: list[ImageResult], preparer: Preparer) -> dict:
    lists = summary(results)
    report = {
        "source": str(src),
        "output": str(out),
        "detector": preparer.detector.name,
        "upscaler": preparer.resizer.name,
        "options": asdict(opts),
        **lists,
        "images": [asdict(r) for r in results],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "report.md").write_text(
        markdown(src, out, opts, results, lists, preparer.resizer.name, preparer.detector.name), encoding="utf-8"
    )
    if opts.preview:
        report["preview"] = str(preview(src, results, out / "preview.png"))
    return report
