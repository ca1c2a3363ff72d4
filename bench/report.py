#!/usr/bin/env python
"""Markdown tables from bench/train_step.py JSON lines: `python bench/report.py results.jsonl [...]`."""

from __future__ import annotations

import json
import sys


def options(c: dict) -> str:
    opts = [c["precision"]]
    if c.get("weight_dtype", "fp32") != "fp32":
        opts.append(f"frozen {c['weight_dtype']}")
    for flag, text in (
        ("grad_checkpointing", "grad-ckpt"),
        ("compile", "compile"),
        ("channels_last", "channels-last"),
        ("no_fused", "AdamW not fused"),
        ("cache_latents", "cache-latents (TE frozen)"),
        ("freeze_text_encoder", "TE frozen"),
    ):
        if c.get(flag) and not (flag == "freeze_text_encoder" and c.get("cache_latents")):
            opts.append(text)
    if c["optim"] != "adamw":
        opts.append(c["optim"])
    if c["attention"] != "sdpa":
        opts.append(c["attention"])
    return ", ".join(opts)


def row(r: dict) -> str:
    c, fw, bare = r["config"], r["framework"], r["bare"]
    adapter = c["adapter"] + (f" r{r['adapter_rank']}" if r.get("adapter_rank") else "")
    steps = f"{c['warmup']}+{c['steps']}" + (f" x{c['rounds']}" if c.get("rounds", 1) > 1 else "")
    if r["device_type"] == "cuda":
        mem = f"{fw['peak_alloc_gb']:.2f} / {bare['peak_alloc_gb']:.2f}"
        extra = (
            f"{r['flops_per_image'] / 1e9:.0f} | {100 * r['mfu_framework']:.1f} / {100 * r['mfu_bare']:.1f}"
            if "mfu_framework" in r
            else " | "
        )
    else:
        mem = f"{fw['peak_rss_mb'] / 1024:.2f} / {bare['peak_rss_mb'] / 1024:.2f}"
        extra = f"{fw['cpu_util']:.2f} / {bare['cpu_util']:.2f}"
    return (
        f"| {c['model']} | {c['resolution']}² | {c['batch']} | {adapter} | {options(c)} | {steps} "
        f"| {fw['img_s']:.3g} | {bare['img_s']:.3g} | **{r['ratio_framework_over_bare_throughput']:.3f}** "
        f"| {fw['s_per_step']:.3g} / {bare['s_per_step']:.3g} | {mem} | {extra} |"
    )


def main(paths: list[str]) -> None:
    rows = [json.loads(line) for p in paths for line in open(p) if line.startswith("{")]
    rows = [r for r in rows if r.get("status") == "ok" and r.get("framework")]
    for kind in ("cpu", "cuda"):
        sel = [r for r in rows if r["device_type"] == kind]
        if not sel:
            continue
        print(f"\n{sel[0]['device']} — torch {sel[0]['torch']}, lightning {sel[0]['lightning']}\n")
        if kind == "cuda":
            print(
                "| model | res | batch | adapter | options | steps (warm-up+measured) | framework img/s | bare img/s "
                "| framework/bare | s/step fw / bare | peak GB alloc fw / bare | GFLOP/img | MFU % fw / bare |"
            )
            print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        else:
            print(
                "| model | res | batch | adapter | options | steps (warm-up+measured) | framework img/s | bare img/s "
                "| framework/bare | s/step fw / bare | peak RSS GB fw / bare | cpu_util fw / bare |"
            )
            print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in sel:
            print(row(r))


if __name__ == "__main__":
    main(sys.argv[1:])
