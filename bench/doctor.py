#!/usr/bin/env python
"""Issue 29: `sdft data doctor` speed on 30 photos at 1024 px, every check but the loss probe (goal <= 30 s, 2 cores).

The photos are real ones that ship in packages (scikit-image's data photos, matplotlib's Grace Hopper portrait):
crops at different places, flips and colour changes of them, each resized to 1024 px on the long side and saved as
JPEG (as phone photos come). Times the doctor itself (resolve + scan + every check + JSON/HTML reports) and prints the
time per check from the result, and the process's whole wall time (imports included) for the command line's view.

    OMP_NUM_THREADS=2 python bench/doctor.py --out outputs/bench_doctor
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image, ImageEnhance, ImageOps  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "gravel", "coins", "grass")


def cpu_seconds() -> float:
    """CPU time of this process (and of finished children, if any)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def sources() -> list[Image.Image]:
    from matplotlib import cbook
    from skimage import data

    out = [Image.fromarray(getattr(data, n)()).convert("RGB") for n in PHOTOS]
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        out.append(Image.open(f).convert("RGB"))
    return out


def write_photos(folder: Path, count: int = 30, side: int = 1024) -> list[Path]:
    """`count` JPEGs at `side` px long side: each source photo cropped (three framings), flipped or recoloured."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    photos = sources()
    paths = []
    for k in range(count):
        img = photos[k % len(photos)]
        w, h = img.size
        f = 0.75 + 0.25 * rng.random()
        left, top = (
            int(rng.integers(0, max(1, int(w * (1 - f)) + 1))),
            int(rng.integers(0, max(1, int(h * (1 - f)) + 1))),
        )
        img = img.crop((left, top, left + int(w * f), top + int(h * f)))
        if k // 10 == 1:
            img = ImageOps.mirror(img)
        if k // 10 == 2:
            img = ImageEnhance.Color(img).enhance(1.4)
        scale = side / max(img.size)
        img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.Resampling.LANCZOS)
        paths.append(folder / f"photo_{k:02d}.jpg")
        img.save(paths[-1], quality=92)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/bench_doctor", help="reports and results.json go here")
    parser.add_argument("--count", type=int, default=30)
    args = parser.parse_args(argv)
    from sdft.prep.check import load_data_config
    from sdft.prep.doctor.html import write_html
    from sdft.prep.doctor.inputs import from_data_settings
    from sdft.prep.doctor.report import text_lines, write_json
    from sdft.prep.doctor.run import doctor

    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "10_sks person"
        write_photos(folder, args.count)
        imported = time.perf_counter() - START
        start, cpu = time.perf_counter(), cpu_seconds()
        data = from_data_settings(
            load_data_config(str(folder), None, ["resolution=1024", "enable_bucket=true"]), "bench"
        )
        result = doctor([data])
        write_json(result, out / "report.json")
        write_html(result, out / "report.html")
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    lines = text_lines(result, 10)
    figures = {
        "images": args.count,
        "doctor_seconds": round(seconds, 2),
        "doctor_cpu_seconds": round(cpu, 2),  # CPU time: the wall time of this single-threaded work on an idle core
        "startup_seconds": round(imported, 2),
        "per_check_seconds": result.seconds,
        "findings": {s: n for s, n in json.loads((out / "report.json").read_text())["counts"].items()},
    }
    (out / "results.json").write_text(json.dumps(figures, indent=2))
    print("\n".join(lines))
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
