#!/usr/bin/env python
"""Issue 14 item 6: the training techniques measured on the toy world (docs/techniques.md), seeds >= 5, mean ± std.

Each (variant, seed) is one `train.py` run (its own class-image folder, so wall time includes class-image
generation) followed by `sdft eval` on it; the eval rows (DINO, CLIP-I, CLIP-T, PRES, DIV, fidelity, drift, and
whatever else the toy world's eval adds, e.g. leakage) are averaged per variant. Groups, same steps each:
  prior: none | class-image prior | base-model prior     ema: off | on     optim: adamw | prodigy (their defaults)
  mask: off | on (needs --masked-data: a subject pasted on busy backgrounds, with masks; see docs/techniques.md)

    python bench/techniques.py --out outputs/techniques --seeds 0,1,2,3,4 --steps 300 [--groups prior,ema,optim,mask]
        [--masked-data datasets/toy_subject_busy] [--dry-run] [-- extra overrides for every run]

Writes <out>/<group>/<variant>/seed<N>/ (runs), <out>/results.jsonl (one line per run) and <out>/table.md (the
table for docs/techniques.md, with the command that made it). Reruns skip runs whose eval.json exists.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = ["model=toy", "data=toy_subject", "trainer.enable_progress_bar=false", "callbacks.validation_seeds=[]",
        "callbacks.checkpoint_every_n_steps=0", "logger=csv"]
COLUMNS = ("dino", "clip_i", "clip_t", "pres", "div", "fidelity", "drift", "train_seconds", "wall_s")
GROUPS = {
    "prior": {"none": ["prior=none"], "class_prior": ["prior=default"], "base_prior": ["prior=base_prediction"]},
    "ema": {"off": [], "on": ["ema.enabled=true"]},
    "optim": {"adamw": ["optim=adamw"], "prodigy": ["optim=prodigy"]},
    "mask": {"off": [], "on": ["loss.masked_loss=true", "loss.unmasked_weight=0.0"]},
}


def run_one(folder: Path, overrides: list[str], dry: bool) -> dict | None:
    """Train + eval one run; returns its row (eval metrics + wall seconds), or None in a dry run."""
    done = folder / "eval" / "results.json"
    if done.exists():
        return json.loads(done.read_text())
    train = [sys.executable, "train.py", *BASE, f"output_dir={folder}", f"data.class_dir={folder / 'class'}",
             *overrides]
    evaluate = [sys.executable, "-m", "sdft.cli", "eval", str(folder), "--out", str(folder / "eval")]
    print(" ".join(train), flush=True)
    if dry:
        return None
    start = time.perf_counter()
    subprocess.run(train, cwd=ROOT, check=True)
    wall = time.perf_counter() - start
    subprocess.run(evaluate, cwd=ROOT, check=True)
    rows = [json.loads(p.read_text())["row"] for p in sorted((folder / "eval").glob("*/eval.json"))]
    row = {k: v for k, v in rows[-1].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    row["wall_s"] = round(wall, 2)
    done.write_text(json.dumps(row, indent=2))
    return row


def table(group: str, results: dict[str, list[dict]]) -> str:
    """One markdown table: a row per variant, mean ± std over seeds per metric."""
    found = {k for rows in results.values() for row in rows for k in row}
    metrics = [m for m in COLUMNS if m in found] + sorted(k for k in found if "leak" in k)  # toy-world leakage
    lines = [f"**{group}**", "", "| variant | n | " + " | ".join(metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for variant, rows in results.items():
        cells = []
        for m in metrics:
            values = [r[m] for r in rows if r.get(m) is not None]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(f"{values[0]:.4g}")
            else:
                cells.append(f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}")
        lines.append(f"| {variant} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/techniques")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--groups", default="prior,ema,optim")
    parser.add_argument("--masked-data", default=None, help="instance folder (with masks) for the mask group")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("extra", nargs="*", help="overrides for every run (after --)")
    args = parser.parse_args(argv)
    out, seeds = Path(args.out).resolve(), [int(s) for s in args.seeds.split(",")]
    groups = args.groups.split(",")
    if "mask" in groups and not args.masked_data:
        parser.error("the mask group needs --masked-data (a subject on busy backgrounds, with masks)")
    sections = [f"Command: `python bench/techniques.py {' '.join(argv if argv is not None else sys.argv[1:])}`", ""]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.jsonl", "a") as log:
        for group in groups:
            results: dict[str, list[dict]] = {}
            for variant, overrides in GROUPS[group].items():
                data = [f"data.instance_dir={args.masked_data}"] if group == "mask" else []
                for seed in seeds:
                    folder = out / group / variant / f"seed{seed}"
                    row = run_one(folder, [f"seed={seed}", f"trainer.max_steps={args.steps}", *data, *overrides,
                                           *args.extra], args.dry_run)
                    if row is not None:
                        results.setdefault(variant, []).append(row)
                        log.write(json.dumps({"group": group, "variant": variant, "seed": seed, **row}) + "\n")
            if results:
                sections += [table(group, results), ""]
    if not args.dry_run:
        (out / "table.md").write_text("\n".join(sections))
        print("\n".join(sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
