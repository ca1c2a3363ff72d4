"""Does the likeness meter's recommended checkpoint beat "take the last one"? (issue 28's acceptance, toy world)

Overtraining recipe: the quickstart at 4x its learning rate and 4x its steps, a checkpoint every 50 steps (all kept),
over several training seeds. Every checkpoint is then measured independently of the meter (sdft.toy.measure: 32
identifier and 32 class generations at seeds the meter never sees): fidelity and leakage of the recommended checkpoint,
of the best one in hindsight (highest fidelity - leakage) and of the last one. Quickstart recipe: how often the
recommendation is the final checkpoint. One JSON line per run in <out>/likeness_study.jsonl (resumable: done runs are
skipped); the summary tables are printed from whatever lines exist.

    OMP_NUM_THREADS=1 nohup python bench/likeness_study.py --seeds 0 1 2 3 4 --out outputs/likeness_study &
    python bench/likeness_study.py --summary --out outputs/likeness_study
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

QUICKSTART_LR, QUICKSTART_STEPS = 5e-3, 200
RECIPES = {
    "overtrain": [
        f"optim.lr={4 * QUICKSTART_LR}",
        f"optim.text_encoder_lr={4 * QUICKSTART_LR}",
        f"trainer.max_steps={4 * QUICKSTART_STEPS}",
        "callbacks.checkpoint_every_n_steps=50",
        "callbacks.keep_last_k=1000",
    ],
    # milder: the note on the 4x recipe found it wrecks the toy base within 50 steps, leaving nothing to recommend
    "overtrain2x": [
        f"optim.lr={2 * QUICKSTART_LR}",
        f"optim.text_encoder_lr={2 * QUICKSTART_LR}",
        f"trainer.max_steps={4 * QUICKSTART_STEPS}",
        "callbacks.checkpoint_every_n_steps=50",
        "callbacks.keep_last_k=1000",
    ],
    # overtrained by steps alone: the quickstart's learning rate, 4x its steps (the usual way a run goes too far)
    "overtrain_steps": [
        f"trainer.max_steps={4 * QUICKSTART_STEPS}",
        "callbacks.checkpoint_every_n_steps=50",
        "callbacks.keep_last_k=1000",
    ],
    "quickstart": ["callbacks.keep_last_k=1000"],
}
QUIET = [  # no grids or loggers; the meter (every checkpoint measured) and the fixed-noise loss stay on
    "callbacks.likeness.max_share=0",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "callbacks.validation_every_n_steps=0",
    "callbacks.validation_at_start=false",
    "callbacks.validation_seeds=[]",
]


def train(recipe: str, seed: int, out: Path) -> Path:
    from hydra import compose, initialize_config_dir

    import sdft.config  # noqa: F401  (registers the schema)
    from sdft.toy.measure import CONF_DIR
    from sdft.run.train import run

    run_dir = out / f"{recipe}-seed{seed}"
    overrides = ["+experiment=quickstart", f"seed={seed}", f"output_dir={run_dir}", *QUIET, *RECIPES[recipe]]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        run(compose(config_name="config", overrides=overrides))
    return run_dir


def evaluate(run_dir: Path, pipe, subject, reference, n: int) -> dict:
    from sdft.toy.measure import measure

    table = json.loads((run_dir / "main" / "likeness" / "likeness.json").read_text())
    rows = []
    for r in table["rows"]:
        m = measure(pipe, r["checkpoint"], subject=subject, reference=reference, n=n)
        rows.append({"step": r["step"], **m.row(), "meter": {k: r[k] for k in ("likeness", "flexibility", "leakage")}})
    return {"recommended": table["recommended"]["step"], "rows": rows}


def pick(result: dict, which: str) -> dict:
    """`recommended`: the meter's rule as it is now, applied to the meter's stored rows (the rule is a function of
    them alone, every checkpoint kept), so runs made before a rule change are scored by today's rule; the
    recommendation the run itself made is `result["recommended"]`."""
    from sdft.evaluation.likeness_rule import Rule

    rows = result["rows"]
    if which == "last":
        return rows[-1]
    if which == "hindsight":
        return max(rows, key=lambda r: r["fidelity"] - r["leakage"])
    return rows[Rule().recommend([{"step": r["step"], **r["meter"]} for r in rows])]


def summary(lines: list[dict]) -> str:
    out = []
    for recipe in sorted({x["recipe"] for x in lines if x["recipe"].startswith("overtrain")}):
        out.append(overtrain_table([x for x in lines if x["recipe"] == recipe], recipe))
    quick = [x for x in lines if x["recipe"] == "quickstart"]
    if quick:
        final = sum(pick(x, "recommended")["step"] == x["rows"][-1]["step"] for x in quick)
        out.append(f"\nquickstart recipe: the recommendation is the final checkpoint in {final} of {len(quick)} seeds")
        for x in quick:
            steps = ", ".join(f"{r['step']}: {r['fidelity']:.2f}/{r['leakage']:.2f}" for r in x["rows"])
            out.append(
                f"- seed {x['seed']}: recommended {pick(x, 'recommended')['step']} (step: fidelity/leakage {steps})"
            )
    return "\n".join(out)


def overtrain_table(over: list[dict], recipe: str) -> str:
    out = [f"\n{recipe}:"]
    if over:
        out.append("| seed | choice | step | fidelity | leakage | fidelity - leakage |\n|---|---|---|---|---|---|")
        for x in over:
            for which in ("recommended", "hindsight", "last"):
                r = pick(x, which)
                out.append(
                    f"| {x['seed']} | {which} | {r['step']} | {r['fidelity']:.3f} | {r['leakage']:.3f} | "
                    f"{r['fidelity'] - r['leakage']:.3f} |"
                )
        for which in ("recommended", "hindsight", "last"):
            f = [pick(x, which)["fidelity"] for x in over]
            leak = [pick(x, which)["leakage"] for x in over]
            out.append(
                f"| mean ({len(over)}) | {which} | - | {np.mean(f):.3f} | {np.mean(leak):.3f} | "
                f"{np.mean(np.subtract(f, leak)):.3f} |"
            )
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--recipes", nargs="+", default=["overtrain", "quickstart"], choices=list(RECIPES))
    p.add_argument("--out", type=Path, default=Path("outputs/likeness_study"))
    p.add_argument("--samples", type=int, default=32, help="generations per prompt in the independent measurement")
    p.add_argument("--summary", action="store_true", help="only print the tables of the runs done so far")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "likeness_study.jsonl"
    lines = [json.loads(s) for s in log_path.read_text().splitlines()] if log_path.is_file() else []
    if not args.summary:
        from sdft.toy.measure import base_reference, toy_subject
        from sdft.models.toy_weights import load_toy_pipeline

        pipe, subject = load_toy_pipeline(), toy_subject()
        reference = base_reference(pipe, n=args.samples)
        for recipe in args.recipes:
            for seed in args.seeds:
                if any(x["recipe"] == recipe and x["seed"] == seed for x in lines):
                    continue
                start = time.time()
                run_dir = train(recipe, seed, args.out)
                trained = time.time() - start
                result = evaluate(run_dir, pipe, subject, reference, args.samples)
                meter_s = json.loads((run_dir / "summary.json").read_text())["likeness"]["seconds"]
                line = {"recipe": recipe, "seed": seed, **result, "train_s": round(trained, 1), "meter_s": meter_s}
                lines.append(line)
                with open(log_path, "a") as f:
                    f.write(json.dumps(line) + "\n")
                print(summary([line]), flush=True)
    print(summary(lines))


if __name__ == "__main__":
    main()
