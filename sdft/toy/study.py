"""The quickstart's multi-seed study: train `+experiment=quickstart` (plus overrides) with several seeds, with and
without prior preservation, measure each LoRA (sdft.toy.measure) and print the per-seed tables that go into
sdft/toy/MODEL_CARD.md.

    OMP_NUM_THREADS=1 sdft toy study --seeds 0-4 --out outputs/toy_study
    sdft toy study --seeds 0 1 --no-baseline -o trainer.max_steps=300   # screen a recipe change
    sdft toy study --seeds 0-19 --no-baseline   # per-seed rows, then mean ± sd over 20 seeds

Each table has one row per seed (fidelity, spots, leakage, drift; sdft/toy/measure.py) and a mean ± sd row; each
run also goes to `<out>/study.jsonl` as one JSON line. The command line is sdft/cli/toy.py.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

from sdft.errors import ConfigError
from sdft.toy.control import GUIDANCE
from sdft.toy.measure import SAMPLES, base_reference, measure, multi_seed, quickstart_lora, toy_subject


def parse_seeds(tokens) -> list[int]:
    """Training seeds from tokens such as `0-19`, `5 6 7` or `0-4 10` (ranges inclusive), in order, no repeats."""
    seeds: list[int] = []
    for token in tokens:
        found = re.fullmatch(r"(\d+)(?:-(\d+))?", str(token).strip())
        first, last = (int(found[1]), int(found[2] or found[1])) if found else (0, -1)
        if last < first:
            raise ConfigError(f"Bad seed {token!r}: give non-negative seeds or ranges such as `0-19` or `5 6 7`.")
        seeds += [s for s in range(first, last + 1) if s not in seeds]
    if not seeds:
        raise ConfigError("No seeds given: pass --seeds such as `0-19` or `5 6 7`.")
    return seeds


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
    samples: int = SAMPLES,
    reuse: bool = False,
) -> dict:
    """{prior: Summary} over `seeds` for each prior setting in `priors` (True: as configured, False: no prior at all,
    neither class images nor the base model's prediction); `pipe` (the toy base), `subject` and `reference` are made here when not given; `log` (a
    text file) gets one JSON line per run (figures, training seconds, per-attribute misses of the identifier). `samples`:
    generations per prompt (the measure's 32 by default; more narrows each seed's figure, whose binomial standard error
    at 32 is about 0.06); `reuse`: a seed whose run under `out_dir` already wrote its LoRA is measured, not trained
    again (to measure earlier runs with more samples or another decoder; the run folder is named by the overrides, not
    by the code, so only for runs of the same code)."""
    from sdft.models.toy_weights import load_toy_pipeline

    pipe = load_toy_pipeline() if pipe is None else pipe
    subject = toy_subject() if subject is None else subject
    reference = base_reference(pipe, n=samples, guidance=guidance) if reference is None else reference
    results = {}
    for prior in priors:
        extra = list(overrides) + ([] if prior else NO_PRIOR)

        def one(seed):
            start = time.time()
            lora = quickstart_lora(seed, out_dir, extra, reuse=reuse)
            trained = time.time() - start
            m = measure(pipe, lora, subject=subject, reference=reference, guidance=guidance, n=samples)
            if log:
                misses = {k: sum(d[k] != subject[k] for d in m.identifier) for k in subject}
                log.write(
                    json.dumps(
                        {
                            "prior": prior,
                            "seed": seed,
                            "overrides": extra,
                            "guidance": guidance,
                            "samples": samples,
                            **m.row(),
                            "train_s": round(trained, 1),
                            "total_s": round(time.time() - start, 1),
                            "misses": misses,
                            "marks": dict(Counter(str(d.get("marks")) for d in m.identifier)),
                        }
                    )
                    + "\n"
                )
                log.flush()
            return m

        results[prior] = multi_seed(one, seeds)
    return results


def run_study(
    seeds: list[int],
    out: Path,
    overrides: list[str],
    baseline: bool,
    guidance: float,
    samples: int = SAMPLES,
    reuse: bool = False,
) -> str:
    """Train and measure every seed (with prior preservation, and without unless `baseline` is off); appends each run
    to `<out>/study.jsonl` and returns the printed tables."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "study.jsonl", "a") as log:
        priors = (True, False) if baseline else (True,)
        results = study(seeds, out, overrides, priors, guidance, log, samples=samples, reuse=reuse)
    return "\n".join(
        f"\n{'with' if prior else 'without'} prior preservation, overrides {overrides}, guidance {guidance}, "
        f"{samples} generations per prompt\n"
        f"{summary.table()}"
        for prior, summary in results.items()
    )


if __name__ == "__main__":  # the command line moved to sdft/cli/ (issue 27)
    from sdft.errors import command_moved

    command_moved("sdft.toy.study", "sdft toy study")
