"""The evaluation report: report.md (tables), report.csv, one bar chart PNG per metric, a side-by-side image grid.

Bar charts are drawn with PIL as sdft/run/sweep.py draws its plots (no plotting dependency); the grid reuses
`sdft.images_grid.make_grid` (rows = prompts, columns = real image and each target's first seed).
"""

from __future__ import annotations

from sdft.images_grid import fmt_value

import csv
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from sdft.images_grid import HEADER_HEIGHT, LABEL_WIDTH, make_grid, tile_size

# key -> (column title, which way is better, what it is)
QUALITY = {
    "dino": ("DINO", "higher", "subject fidelity: DINO ViT-S/16 cosine, generated vs real instance images"),
    "clip_i": ("CLIP-I", "higher", "subject fidelity: CLIP image cosine, generated vs real"),
    "clip_t": ("CLIP-T", "higher", "prompt following: CLIP image-prompt cosine (identifier removed)"),
    "pres": ("PRES", "lower", "prior preservation: DINO cosine of class-prompt images to the subject (leakage)"),
    "div": ("DIV", "higher", "diversity: 1 - DINO cosine between class-prompt images of different seeds"),
    "fidelity": ("fidelity loss", "lower", "denoising loss on the instance images at fixed noise/timesteps"),
    "drift": ("drift", "lower", "language drift: MSE of predictions vs the base model on class prompts"),
}
COST = {
    "steps": ("steps", None, "optimizer steps trained into it (all its phases)"),
    "trainable_params": ("trainable params", None, "trained parameters (U-Net + text encoder, all its phases)"),
    "adapter_mb": ("adapter MB", "lower", "LoRA files (and trained model folders of a full fine-tune) on disk"),
    "train_seconds": ("train s", "lower", "training wall time"),
    "train_img_per_s": ("train img/s", "higher", "training throughput (instance + class images)"),
    "train_peak_gb": ("train peak GiB", "lower", "peak memory while training: CUDA max allocated, else process RSS"),
    "infer_s": ("s/img base", "lower", "inference s/image without the LoRA"),
    "infer_s_lora": ("s/img LoRA", "lower", "inference s/image with the LoRA, unfused"),
    "infer_s_fused": ("s/img fused", "lower", "inference s/image with the LoRA fused into the weights"),
    "infer_peak_gb": ("infer peak GiB", "lower", "peak GPU memory at inference with the LoRA (CUDA only)"),
}
COLUMNS = {**QUALITY, **COST}
PAPER = (
    "DreamBooth paper, Table 1 (SD, 30 subjects): DreamBooth-SD DINO 0.668, CLIP-I 0.803, CLIP-T 0.305; "
    "real images DINO 0.774, CLIP-I 0.885. Its PRES/DIV ablation is on Imagen; its DIV is LPIPS-based, "
    "ours DINO-based: compare directions, not values."
)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return fmt_value(value)


def _table(rows: list[dict], keys: list[str]) -> list[str]:
    header = ["run", "kind", *[COLUMNS[k][0] + {"higher": " ↑", "lower": " ↓", None: ""}[COLUMNS[k][1]] for k in keys]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([r["label"], r.get("kind", ""), *[_cell(r.get(k)) for k in keys]]) + " |" for r in rows]
    return lines


def write_tables(rows: list[dict], out: Path, notes: list[str]) -> list[Path]:
    keys = [k for k in COLUMNS if any(r.get(k) is not None for r in rows)]
    with open(out / "report.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "kind", *keys])
        writer.writerows(
            [[r["label"], r.get("kind", ""), *["" if r.get(k) is None else r[k] for k in keys]] for r in rows]
        )
    quality = [k for k in QUALITY if k in keys]
    cost = [k for k in COST if k in keys]
    lines = [
        "# Evaluation report",
        "",
        *notes,
        "",
        "## Quality",
        "",
        *_table(rows, quality),
        "",
        "## Cost",
        "",
        *_table([r for r in rows if r.get("kind") != "real"], cost),
        "",
        "## Columns",
        "",
    ]
    lines += [f"- **{COLUMNS[k][0]}** ({COLUMNS[k][1] or 'info'}): {COLUMNS[k][2]}" for k in keys]
    lines += ["", PAPER]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return [out / "report.md", out / "report.csv"]


def draw_bars(rows: list[dict], key: str, path: Path) -> Path:
    """One horizontal bar per run; green = best, red = worst (by the metric's direction); value printed."""
    title, better, _ = COLUMNS[key]
    font = ImageFont.load_default(size=13)
    items = [(r["label"], r.get(key)) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    bar_h, left, width = 28, 200, 420
    img = Image.new("RGB", (left + width + 110, 50 + bar_h * max(len(items), 1)), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 8), f"{title} ({better} is better)" if better else title, fill="black", font=font)
    values = [v for _, v in items]
    lo, hi = min(values + [0.0]), max(values + [0.0])
    span = (hi - lo) or 1.0
    zero = left + int(width * (0 - lo) / span)
    vmin, vmax = (min(values), max(values)) if values else (0.0, 1.0)
    for i, (label, v) in enumerate(items):
        y = 40 + i * bar_h
        goodness = 0.5 if vmax == vmin else (v - vmin) / (vmax - vmin)
        goodness = goodness if better != "lower" else 1 - goodness
        colour = (int(230 - 150 * goodness), int(80 + 120 * goodness), 90) if better else (110, 140, 200)
        end = left + int(width * (v - lo) / span)
        d.text((8, y + 6), label[:26], fill="black", font=font)
        d.rectangle((min(zero, end), y, max(zero, end, min(zero, end) + 1), y + bar_h - 6), fill=colour)
        d.text((max(zero, end) + 6, y + 6), _cell(float(v)), fill="black", font=font)
    img.save(path)
    return path


def draw_comparison_grid(results, evaluator, path: Path) -> Path:
    """Rows = the first eval.grid_prompts prompts; columns = a real instance image, then each target (first seed)."""
    n = max(1, min(evaluator.cfg.grid_prompts, len(evaluator.prompts)))
    rows = [[evaluator.real[i % len(evaluator.real)]] + [r.images[i][0] for r in results] for i in range(n)]
    labels = ["real"] + [r.target.label for r in results]
    tile = tile_size(evaluator.resolution)
    grid = make_grid(rows, evaluator.prompts[:n], labels, tile)
    draw = ImageDraw.Draw(grid)  # make_grid labels columns "seed X": relabel them with the run names
    draw.rectangle((LABEL_WIDTH, 0, grid.width, HEADER_HEIGHT - 1), fill="white")
    font = ImageFont.load_default(size=12)
    for c, label in enumerate(labels):
        draw.text((LABEL_WIDTH + c * tile + 4, 5), label[: tile // 7], fill="black", font=font)
    grid.save(path)
    return path


def write_report(
    rows: list[dict], results, evaluator, out: str | Path, extra_notes: list[str] | None = None
) -> list[Path]:
    """report.md, report.csv, report_<metric>.png for every metric with values, grid.png; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = evaluator.cfg
    notes = [
        f"Subject: `{evaluator.identifier} {evaluator.cls}`, {len(evaluator.real)} real images; "
        f"{len(evaluator.prompts)} prompts x {len(evaluator.seeds)} seeds, {cfg.steps} steps {cfg.scheduler}, "
        f"CFG {cfg.guidance}, {evaluator.resolution} px; {cfg.class_images} class-prompt images "
        f"(`{evaluator.class_prompt}`) for PRES/DIV; {len(evaluator.drift_prompts)} drift prompts.",
        f"Feature models: CLIP `{evaluator.clip.name}`, DINO `{evaluator.dino.name}`.",
        *(extra_notes or []),
    ]
    paths = write_tables(rows, out, notes)
    for key in COLUMNS:
        if sum(isinstance(r.get(key), (int, float)) for r in rows) >= 1:
            paths.append(draw_bars(rows, key, out / f"report_{key}.png"))
    if results:
        paths.append(draw_comparison_grid(results, evaluator, out / "grid.png"))
    return paths
