"""The quickstart's multi-seed study: train `+experiment=quickstart` (plus overrides) with several seeds, with and
without prior preservation, measure each LoRA (sdft.toy.measure) and print the per-seed tables that go into
sdft/toy/MODEL_CARD.md.

    OMP_NUM_THREADS=1 python -m sdft.toy.study --seeds 0 1 2 3 4 --out outputs/toy_study
    python -m sdft.toy.study --seeds 0 1 --no-baseline -o trainer.max_steps=300   # screen a recipe change
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sdft.toy.control import GUIDANCE
from sdft.toy.measure import base_reference, measure, multi_seed, quickstart_lora, toy_subject


NO_PRIOR = ["prior.enabled=false", "prior.base_prediction=false"]


def study(
    seeds,
    out_dir: Path,
    overrides=(),
    priors=(True, False),
    guidance: float = GUIDANCE,
    log=None,
    pipe=None,
    subject=None,
    reference=None,
) -> dict:
    """{prior: Summary} over `seeds` for each prior setting in `priors` (True: as configured, False: no prior at all,
    neither class images nor the base model's prediction); `pipe` (the toy base), `subject` and `reference` are made here when not given; `log` (a
    text file) gets one JSON line per run (figures, training seconds, per-attribute misses of the identifier)."""
    from sdft.toy.weights import load_toy_pipeline

    pipe = load_toy_pipeline() if pipe is None else pipe
    subject = toy_subject() if subject is None else subject
    reference = base_reference(pipe, guidance=guidance) if reference is None else reference
    results = {}
    for prior in priors:
        extra = list(overrides) + ([] if prior else NO_PRIOR)

        def one(seed):
            start = time.time()
            lora = quickstart_lora(seed, out_dir, extra)
            trained = time.time() - start
            m = measure(pipe, lora, subject=subject, reference=reference, guidance=guidance)
            if log:
                misses = {k: sum(d[k] != subject[k] for d in m.identifier) for k in subject}
                log.write(
                    json.dumps(
                        {
                            "prior": prior,
                            "seed": seed,
                            "overrides": extra,
                            "guidance": guidance,
                            **m.row(),
                            "train_s": round(trained, 1),
                            "total_s": round(time.time() - start, 1),
                            "misses": misses,
                        }
                    )
                    + "\n"
                )
                log.flush()
            return m

        results[prior] = multi_seed(one, seeds)
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", type=Path, default=Path("outputs/toy_study"))
    p.add_argument("-o", "--override", action="append", default=[], help="a Hydra override for the quickstart")
    p.add_argument("--guidance", type=float, default=GUIDANCE, help="guidance scale of the measured generations")
    p.add_argument("--no-baseline", action="store_true", help="skip the runs without prior preservation")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "study.jsonl", "a") as log:
        results = study(
            args.seeds, args.out, args.override, (True,) if args.no_baseline else (True, False), args.guidance, log
        )
    for prior, summary in results.items():
        print(
            f"\n{'with' if prior else 'without'} prior preservation, overrides {args.override}, "
            f"guidance {args.guidance}\n{summary.table()}"
        )


if __name__ == "__main__":
    main()
