"""Sweep summary: after a Hydra multirun, one CSV, one markdown table and one PNG of the final metrics.

A Hydra callback (conf/config.yaml: hydra.callbacks.sweep_summary) calls `write_sweep_summary` at the end of every
multirun; it can also be run by hand: `sdft sweep multirun/<name>/<date_time>`. It reads the jobs' folders,
so it collects jobs that ran anywhere (another process, another node) as long as they share the sweep folder.

Also here: the resolvers of conf/hydra/launcher/local_gpus.yaml (one job per local GPU), registered on import (the
callback above makes every launcher's job process import this module before the job's env_set is read).
"""

from __future__ import annotations

from sdft.images_grid import fmt_value

import csv
import fcntl
import json
import logging
import math
import os
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

DEFAULT_METRIC = "val/fixed_noise_loss"


def _final_metrics(summary: dict) -> tuple[dict, float]:
    """The last phase's final metrics and the run's total training time."""
    last = summary["phases"][-1] if "phases" in summary else summary
    return last.get("final_metrics", {}), summary.get("train_seconds", 0.0)


def collect(sweep_dir: Path) -> tuple[list[dict], list[str]]:
    """One row per job (its overrides and metrics), and the override keys that vary across jobs."""
    rows = []
    for summary_path in sorted(
        sweep_dir.glob("*/summary.json"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    ):
        job = summary_path.parent
        overrides = (
            yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
            if (job / ".hydra" / "overrides.yaml").is_file()
            else []
        )
        params = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
        metrics, seconds = _final_metrics(json.loads(summary_path.read_text()))
        rows.append({"job": job.name, "params": params, "metrics": metrics, "train_seconds": seconds})
    keys = sorted({k for r in rows for k in r["params"]})
    swept = [k for k in keys if len({r["params"].get(k) for r in rows}) > 1]
    return rows, swept


def write_tables(rows: list[dict], swept: list[str], metric: str, out: Path) -> None:
    metric_names = sorted({m for r in rows for m in r["metrics"]})
    header = ["job", *swept, *metric_names, "train_seconds"]
    table = [
        [
            r["job"],
            *[r["params"].get(k, "") for k in swept],
            *[r["metrics"].get(m, "") for m in metric_names],
            r["train_seconds"],
        ]
        for r in rows
    ]
    with open(out / "sweep_summary.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *table])
    ranked = sorted(
        table,
        key=lambda row: row[header.index(metric)] if metric in header and row[header.index(metric)] != "" else math.inf,
    )
    lines = [
        f"# Sweep summary ({len(rows)} runs, sorted by {metric})",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(fmt_value(v) for v in row) + " |" for row in ranked]
    (out / "sweep_summary.md").write_text("\n".join(lines) + "\n")


def draw_plot(rows: list[dict], swept: list[str], metric: str, path: Path) -> None:
    """A heat-map table for two swept keys (rows x columns), bars otherwise; each cell shows its value."""
    font = ImageFont.load_default(size=13)
    values = {r["job"]: r["metrics"].get(metric) for r in rows}
    finite = [v for v in values.values() if isinstance(v, (int, float))]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)

    def colour(v):  # green (best, low) -> red (worst, high)
        if not isinstance(v, (int, float)):
            return (200, 200, 200)
        t = 0.0 if hi == lo else (v - lo) / (hi - lo)
        return (int(80 + 175 * t), int(200 - 120 * t), 90)

    if len(swept) == 2:
        a_vals = sorted({r["params"][swept[0]] for r in rows}, key=_sort_key)
        b_vals = sorted({r["params"][swept[1]] for r in rows}, key=_sort_key)
        cell, left, top = (140, 48), 140, 60
        img = Image.new("RGB", (left + cell[0] * len(b_vals) + 20, top + cell[1] * len(a_vals) + 20), "white")
        d = ImageDraw.Draw(img)
        d.text((10, 8), f"{metric} by {swept[0]} (rows) x {swept[1]} (columns)", fill="black", font=font)
        for j, b in enumerate(b_vals):
            d.text((left + j * cell[0] + 8, top - 20), f"{swept[1]}={b}", fill="black", font=font)
        for i, a in enumerate(a_vals):
            d.text((8, top + i * cell[1] + 16), f"{swept[0]}={a}", fill="black", font=font)
            for j, b in enumerate(b_vals):
                v = next(
                    (values[r["job"]] for r in rows if r["params"][swept[0]] == a and r["params"][swept[1]] == b), None
                )
                box = (left + j * cell[0], top + i * cell[1], left + (j + 1) * cell[0] - 2, top + (i + 1) * cell[1] - 2)
                d.rectangle(box, fill=colour(v))
                d.text((box[0] + 8, box[1] + 16), fmt_value(v) if v is not None else "-", fill="black", font=font)
    else:
        bar_h, left, width = 28, 260, 400
        img = Image.new("RGB", (left + width + 120, 50 + bar_h * len(rows)), "white")
        d = ImageDraw.Draw(img)
        d.text((10, 8), f"{metric} per run", fill="black", font=font)
        for i, r in enumerate(rows):
            v, y = values[r["job"]], 40 + i * bar_h
            label = ", ".join(f"{k}={r['params'].get(k)}" for k in swept) or f"job {r['job']}"
            d.text((8, y + 6), label[:38], fill="black", font=font)
            length = 0 if not isinstance(v, (int, float)) or hi <= 0 else int(width * v / hi)
            d.rectangle((left, y, left + max(length, 1), y + bar_h - 6), fill=colour(v))
            d.text((left + max(length, 1) + 6, y + 6), fmt_value(v) if v is not None else "-", fill="black", font=font)
    img.save(path)


def _sort_key(value: str):
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def write_sweep_summary(sweep_dir: str | Path, metric: str = DEFAULT_METRIC) -> list[Path]:
    """Write sweep_summary.csv/.md/.png into `sweep_dir`; returns the paths (none when no job finished)."""
    sweep_dir = Path(sweep_dir)
    rows, swept = collect(sweep_dir)
    if not rows:
        return []
    write_tables(rows, swept, metric, sweep_dir)
    draw_plot(rows, swept, metric, sweep_dir / "sweep_summary.png")
    return [sweep_dir / f"sweep_summary.{ext}" for ext in ("csv", "md", "png")]


class SweepSummary(Callback):
    """Hydra callback: writes the sweep summary when a multirun ends."""

    def __init__(self, metric: str = DEFAULT_METRIC):
        self.metric = metric

    def on_multirun_end(self, config, **kwargs) -> None:
        paths = write_sweep_summary(config.hydra.sweep.dir, self.metric)
        if paths:
            print(f"Sweep summary: {', '.join(str(p) for p in paths)}")


def visible_gpus() -> list[str]:
    """The GPU ids jobs may use, without initialising CUDA (a job's CUDA_VISIBLE_DEVICES must be set before that):
    CUDA_VISIBLE_DEVICES when set, else the NVIDIA driver's list of GPUs."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    driver = Path("/proc/driver/nvidia/gpus")
    return [str(k) for k in range(len(list(driver.iterdir())))] if driver.is_dir() else []


def gpu_count() -> int:
    """`${sdft_gpus:}`: how many jobs run at once in local_gpus.yaml (at least 1)."""
    return max(1, len(visible_gpus()))


_claimed: dict[str, tuple[str, object]] = {}  # lock folder -> (GPU id, open lock file) of this process


def claim_gpu(lock_dir: str) -> str:
    """`${sdft_job_gpu:<folder>}`: the GPU this worker process owns for the sweep, for its jobs' CUDA_VISIBLE_DEVICES.

    A process keeps one GPU for life (a reused worker cannot move once CUDA is up): the first free one, held by an
    flock on `<folder>/gpu_<id>.lock` that the OS drops when the process ends. joblib has no per-worker device
    assignment, hence this. No GPU: "" (a CPU run)."""
    if lock_dir in _claimed:
        return _claimed[lock_dir][0]
    gpus = visible_gpus()
    if not gpus:
        return ""
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    for gpu in gpus:
        handle = open(Path(lock_dir) / f"gpu_{gpu}.lock", "w")  # kept open: the lock lives as long as the process
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _claimed[lock_dir] = (gpu, handle)
        log.info("Sweep worker %d runs its jobs on GPU %s (CUDA_VISIBLE_DEVICES=%s)", os.getpid(), gpu, gpu)
        return gpu
    log.warning("Sweep worker %d found every GPU taken (%s): it shares GPU %s", os.getpid(), gpus, gpus[0])
    return gpus[0]


OmegaConf.register_new_resolver("sdft_gpus", gpu_count, replace=True)
OmegaConf.register_new_resolver("sdft_job_gpu", claim_gpu, replace=True, use_cache=False)
