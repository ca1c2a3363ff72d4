"""`sdft sweep SWEEP_DIR [--metric M]`: a multirun's sweep summary again (sweep_summary.csv / .md / .png; the Hydra
callback writes it when the multirun ends; the work: sdft/run/sweep.py)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep", help="write a multirun's sweep summary (CSV, markdown table, chart) from its job folders"
    )
    parser.add_argument("sweep_dir", help="the multirun's folder (multirun/<name>/<date_time>)")
    parser.add_argument("--metric", default=None, help="the metric to rank by (default: the summary's own)")
    parser.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    from sdft.run.sweep import write_sweep_summary

    paths = write_sweep_summary(args.sweep_dir, *([args.metric] if args.metric else []))
    for path in paths:
        print(path)
    if not paths:
        print(f"{args.sweep_dir}: no finished job (no */summary.json); nothing summarised.")
    return 0 if paths else 1
