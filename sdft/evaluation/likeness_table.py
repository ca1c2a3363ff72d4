"""The likeness meter's outputs: a per-checkpoint table (likeness.csv, likeness.json) and a chart (likeness.png:
likeness, flexibility, leakage and the fixed-noise validation loss against step, the recommended checkpoint marked).
Every file is written to a temp name and renamed (sdft/atomic.py): a crash never leaves half a table."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from sdft.atomic import atomic_path, write_text

TABLE_NAME = "likeness"
PANELS = ("likeness", "flexibility", "leakage", "val_loss")


def columns(rows: list[dict]) -> list[str]:
    """step, checkpoint, the panels, then every other key in first-seen order, then `recommended`."""
    first = ["step", "checkpoint", *PANELS, "adherence"]
    rest = [k for r in rows for k in r if k not in first and k != "recommended"]
    return first + list(dict.fromkeys(rest)) + ["recommended"]


def write_table(out_dir: Path, rows: list[dict], recommended: int | None, info: dict) -> list[Path]:
    """likeness.csv, likeness.json (rows + `recommended` + `info`: metric, prompts, rule) and likeness.png."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows), extrasaction="ignore")
    writer.writeheader()
    for i, r in enumerate(rows):
        writer.writerow({**r, "recommended": i == recommended})
    chosen = rows[recommended] if recommended is not None else None
    doc = {**info, "recommended": chosen, "rows": rows}
    paths = [write_text(out_dir / f"{TABLE_NAME}.csv", buf.getvalue())]
    paths.append(write_text(out_dir / f"{TABLE_NAME}.json", json.dumps(doc, indent=2, default=str) + "\n"))
    with atomic_path(out_dir / f"{TABLE_NAME}.png") as tmp:
        chart(rows, recommended, info.get("metric", "")).save(tmp, format="PNG")
    paths.append(out_dir / f"{TABLE_NAME}.png")
    return paths


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def chart(rows: list[dict], recommended: int | None, metric: str = "") -> Image.Image:
    """Four line panels against step. Drawn with PIL, as sdft/run/sweep.py's plot: the core install has no plotting
    library, and four polylines need none."""
    font = ImageFont.load_default(size=12)
    pw, ph, left, top, gap = 300, 170, 56, 34, 30
    img = Image.new("RGB", (2 * (left + pw) + gap, 2 * (top + ph + gap) + 10), "white")
    d = ImageDraw.Draw(img)
    steps = [r["step"] for r in rows]
    lo_s, hi_s = (min(steps), max(steps)) if steps else (0, 1)
    for k, key in enumerate(PANELS):
        ox, oy = (k % 2) * (left + pw + gap) + left, (k // 2) * (top + ph + gap) + top
        title = f"{key} ({metric})" if key == "likeness" and metric else key
        d.text((ox, oy - 22), title, fill="black", font=font)
        d.rectangle((ox, oy, ox + pw, oy + ph), outline=(120, 120, 120))
        pts = [(r["step"], r.get(key)) for r in rows if _finite(r.get(key))]
        if not pts:
            d.text((ox + 10, oy + ph // 2), "not measured", fill=(120, 120, 120), font=font)
            continue
        lo, hi = min(v for _, v in pts), max(v for _, v in pts)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5

        def xy(step, v, lo=lo, hi=hi):
            x = ox + 8 + (pw - 16) * ((step - lo_s) / (hi_s - lo_s) if hi_s > lo_s else 0.5)
            return x, oy + ph - 8 - (ph - 16) * (v - lo) / (hi - lo)

        d.text((ox - 50, oy - 6), f"{hi:.3g}", fill="black", font=font)
        d.text((ox - 50, oy + ph - 10), f"{lo:.3g}", fill="black", font=font)
        if recommended is not None:
            x, _ = xy(rows[recommended]["step"], lo)
            d.line((x, oy, x, oy + ph), fill=(40, 170, 60), width=2)
        line = [xy(s, v) for s, v in pts]
        if len(line) > 1:
            d.line(line, fill=(40, 80, 225), width=2)
        for x, y in line:
            d.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(40, 80, 225))
        d.text((ox, oy + ph + 4), f"step {lo_s} .. {hi_s}", fill="black", font=font)
    if recommended is not None:
        d.text(
            (left, img.height - 16),
            f"recommended: step {rows[recommended]['step']} (green line)",
            fill=(40, 170, 60),
            font=font,
        )
    return img
