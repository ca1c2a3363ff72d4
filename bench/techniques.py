#!/usr/bin/env python
"""Issue 14 item 6: the training techniques measured on the toy world (docs/techniques.md), seeds >= 5.

One process trains every (variant, seed) in-process on a PINNED recipe (written here, not taken from
conf/experiment/quickstart.yaml, which may change) and measures each LoRA with sdft.toy.measure's figures on the
same generations (32 per prompt, fixed seeds): fidelity (`a sks dog` matches the subject), leakage (`a dog` does),
drift (`a dog` attribute distributions vs the base's), plus busy_id / busy_class: the share of `a sks dog` / `a dog`
generations whose background is busy (sdft.toy.masks.is_busy), the background leakage of the masked-loss rows.

Variants (same steps, lr, rank, adapter, class images each; `class_prior` is the baseline of the ema, optim rows):
  prior: none | class_prior (64 class images generated per seed, timed) | base_prior (prior=base_prediction)
  ema: on (defaults: decay 0.999, diffusers' ramp)          optim: prodigy (its preset: lr 1.0, constant schedule)
  mask: off | on — the subject pasted on busy backgrounds through its generated mask (sdft/toy/masks.py),
        no prior; on = loss.masked_loss=true loss.unmasked_weight=0.0

    OMP_NUM_THREADS=1 nice -n 10 python bench/techniques.py --out outputs/techniques --seeds 0,1,2,3,4

Runs the variants of --only (group/variant; default all) group by group in the order given, seed-major inside a
group (every variant of seed 0, then of seed 1, ...), so a cut-short run still compares a group on equal seeds. Writes <out>/results.jsonl (one line per run, appended as it goes; a rerun skips the runs already there) and
<out>/table.md (per-seed rows and mean ± sample sd per variant, rewritten after every run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdft.toy.measure import QUIET  # noqa: E402  (after the sys.path line, for a checkout without install)

STEPS = 200
RECIPE = [  # pinned: the quickstart recipe of 2026-12-02 spelt out
    "model=toy",
    "data=toy_subject",
    "adapter=lora_attn_ff",
    "adapter.rank=8",
    "trainer=cpu",
    "data.use_captions=false",
    "data.resolution=32",
    "data.batch_size=2",
    *QUIET,  # no grids, checkpoints or loggers inside the timed run
]
ADAMW = ["optim=adamw", "optim.lr=5e-3", "optim.text_encoder_lr=5e-3"]  # the recipe's optimizer (not for prodigy)
CLASS_PRIOR = [
    "prior=default",
    "prior.num_class_images=64",
    "prior.generation_steps=20",
    "prior.generation_guidance=3.0",
]
VARIANTS = {  # (group, variant): overrides after RECIPE
    ("prior", "none"): [*ADAMW, "prior=none"],
    ("prior", "class_prior"): [*ADAMW, *CLASS_PRIOR],
    ("prior", "base_prior"): [*ADAMW, "prior=base_prediction"],
    ("ema", "on"): [*ADAMW, *CLASS_PRIOR, "ema.enabled=true"],
    ("optim", "prodigy"): ["optim=prodigy", *CLASS_PRIOR],
    ("mask", "off"): [*ADAMW, "prior=none"],  # no prior: the cheaper runs, and the background is the question
    ("mask", "on"): [*ADAMW, "prior=none", "loss.masked_loss=true", "loss.unmasked_weight=0.0"],
}
BASELINES = {"ema": ("off", ("prior", "class_prior")), "optim": ("adamw", ("prior", "class_prior"))}
METRICS = ("fidelity", "leakage", "drift", "busy_id", "busy_class", "wall_s")


def train(out: Path, group: str, variant: str, seed: int, steps: int, busy: Path) -> tuple[Path, float, dict]:
    """One run; (LoRA file, wall seconds including class-image generation, summary)."""
    from hydra import compose, initialize_config_dir

    import sdft.config  # noqa: F401  (registers the config schema)
    from sdft.run.train import run

    folder = out / "runs" / group / variant / f"seed{seed}"
    overrides = [
        *RECIPE,
        f"seed={seed}",
        f"trainer.max_steps={steps}",
        f"output_dir={folder}",
        f"data.class_dir={out / 'class' / f'seed{seed}'}",
        *VARIANTS[group, variant],
    ]
    if group == "mask":
        overrides.append(f"data.instance_dir={busy}")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    start = time.perf_counter()
    summary = run(cfg)
    return Path(summary["output"]), time.perf_counter() - start, summary


def measure(pipe, lora: Path, reference: list[dict], subject: dict) -> dict:
    """fidelity, leakage, drift (sdft.toy.measure) and the busy-background shares, from one set of generations."""
    from sdft.toy.control import sample
    from sdft.toy.detector import detect
    from sdft.toy.masks import is_busy
    from sdft.toy.measure import CLASS_PROMPT, CLASS_SEED, IDENTIFIER_PROMPT, IDENTIFIER_SEED, SAMPLES, drift, matches

    pipe.load_lora_weights(str(lora), adapter_name="measured")
    try:
        ident = sample(pipe, [IDENTIFIER_PROMPT] * SAMPLES, seed=IDENTIFIER_SEED)
        classes = sample(pipe, [CLASS_PROMPT] * SAMPLES, seed=CLASS_SEED)
    finally:
        pipe.unload_lora_weights()
    d_id, d_cls = [detect(im).attributes() for im in ident], [detect(im).attributes() for im in classes]
    return {
        "fidelity": statistics.mean(matches(d, subject) for d in d_id),
        "leakage": statistics.mean(matches(d, subject) for d in d_cls),
        "drift": drift(d_cls, reference),
        "busy_id": statistics.mean(is_busy(im) for im in ident),
        "busy_class": statistics.mean(is_busy(im) for im in classes),
    }


def table(rows: list[dict], command: str) -> str:
    """Per group: per-seed rows of every variant, then mean ± sample sd (the baselines' rows repeated)."""
    lines = [f"Command: `{command}`", ""]
    for group in dict.fromkeys(g for g, _ in VARIANTS):
        variants = [v for g, v in VARIANTS if g == group]
        if group in BASELINES:
            variants.insert(0, BASELINES[group][0])
        lines += [
            f"**{group}**",
            "",
            "| variant | seed | " + " | ".join(METRICS) + " |",
            "|---" * (len(METRICS) + 2) + "|",
        ]
        means = []
        for v in variants:
            g, name = BASELINES[group][1] if group in BASELINES and v == BASELINES[group][0] else (group, v)
            got = sorted((r for r in rows if r["group"] == g and r["variant"] == name), key=lambda r: r["seed"])
            label = v if (g, name) == (group, v) else f"{v} (= {g}/{name})"
            lines += [
                f"| {label} | {r['seed']} | "
                + " | ".join(f"{r[m]:.3f}" if m != "wall_s" else f"{r[m]:.0f}" for m in METRICS)
                + " |"
                for r in got
            ]
            if len(got) > 1:
                cells = [
                    f"{statistics.mean(r[m] for r in got):.3f} ± {statistics.stdev(r[m] for r in got):.3f}"
                    if m != "wall_s"
                    else f"{statistics.mean(r[m] for r in got):.0f} ± {statistics.stdev(r[m] for r in got):.0f}"
                    for m in METRICS
                ]
                means.append(f"| **{label}** | mean ± sd (n={len(got)}) | " + " | ".join(cells) + " |")
        lines += means + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/techniques")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument(
        "--only",
        default=",".join(f"{g}/{v}" for g, v in VARIANTS),
        help="group/variant list in the order to run, e.g. prior/base_prior,mask/off,mask/on",
    )
    args = parser.parse_args(argv)
    import torch

    from sdft.toy.masks import write_busy_subject
    from sdft.toy.measure import base_reference, toy_subject
    from sdft.models.toy_weights import load_toy_pipeline

    torch.set_num_threads(1)
    out, seeds = Path(args.out).resolve(), [int(s) for s in args.seeds.split(",")]
    only = [tuple(item.split("/")) for item in args.only.split(",")]
    unknown = [item for item in only if item not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {[f'{g}/{v}' for g, v in VARIANTS]}")
    command = "OMP_NUM_THREADS=1 nice -n 10 python bench/techniques.py " + " ".join(argv or sys.argv[1:])
    out.mkdir(parents=True, exist_ok=True)
    busy = out / "data" / "toy_subject_busy"
    write_busy_subject(ROOT / "datasets" / "toy_subject", busy)  # deterministic: same files on every run
    log = out / "results.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    pipe = load_toy_pipeline()
    reference, subject = base_reference(pipe), toy_subject()
    order = [(g, v, s) for group in dict.fromkeys(g for g, _ in only) for s in seeds for g, v in only if g == group]
    for group, variant, seed in order:
        if any(r["group"] == group and r["variant"] == variant and r["seed"] == seed for r in rows):
            continue
        lora, wall, summary = train(out, group, variant, seed, args.steps, busy)
        row = {
            "group": group,
            "variant": variant,
            "seed": seed,
            "wall_s": round(wall, 1),
            "train_seconds": summary.get("train_seconds"),
            "steps": summary.get("steps"),
            **measure(pipe, lora, reference, subject),
        }
        rows.append(row)
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")
        (out / "table.md").write_text(table(rows, command))
        print(json.dumps(row), flush=True)
    print(table(rows, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
