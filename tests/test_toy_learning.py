"""DreamBooth learns the toy subject, and prior preservation keeps its class prompt from drifting.

The quickstart (`+experiment=quickstart`: prior from the base model's own prediction for `a dog`) is trained with two
seeds with that prior and one without any prior, and each LoRA is measured by sdft.toy.measure at fixed generation
seeds: fidelity (share of `a sks dog` generations matching the subject on class, body colour, head colour and
pattern), leakage (the same share for `a dog`) and drift (mean total-variation distance of the `a dog` attribute
distributions from the base's), and spots (identifier generations with three separate spots, not a band). The
twenty-seed study behind the bounds is `sdft toy study --seeds 0-19 --no-baseline` (sdft/toy/MODEL_CARD.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers.config import ROOT
from sdft.toy.measure import Summary, base_reference, matches, measure, toy_subject
from sdft.toy.study import study
from sdft.models.toy_weights import load_toy_pipeline

TRAIN_SEEDS = (0, 1)  # the study's first seeds, not chosen for their figures
BASELINE_SEEDS = (0,)  # without prior preservation (a prefix of TRAIN_SEEDS: compared seed by seed)
# The twenty-seed study of the quickstart's recipe on the toy base of pretraining step 6 (issue 34: lr 4e-3, 300
# steps, base-model prior; sdft/toy/MODEL_CARD.md, bench/results/toy_recipe_screen/base6_quickstart_seeds0-19.jsonl):
# fidelity 0.900 +- 0.061, spots 0.517 +- 0.195, leakage 0.039 +- 0.039 (seeds 0 and 1: fidelity 0.844 / 0.875,
# spots 0.531 / 0.688, leakage 0 / 0.062). The fidelity bound is the twenty-seed mean minus about three standard
# deviations of a two-seed mean (0.043); class images instead of the base model's prediction (0.43 over five seeds,
# on the base before step 6) or no prior (0.58) fail it. The spots bound, mean minus about two and a half of its
# two-seed deviations (0.14), fails a decoder that draws the spots as a band (spots 0 on every seed before the
# decoder refinement); the leakage bound is the target.
FIDELITY_MIN = 0.77
SPOTS_MIN = 0.15
LEAKAGE_MAX = 0.1

# The baseline's study, in a second process: it needs nothing from the runs with a prior, so it trains and measures
# (with its own toy base, subject and reference, made as below) on the core the suite itself leaves idle.
BASELINE = """
import json, sys
from pathlib import Path
from sdft.toy.study import study
seeds, out_dir, result = json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
summary = study(seeds, out_dir, priors=(False,))[False]
result.write_text(json.dumps({"seeds": summary.seeds, "per_seed": summary.per_seed}))
"""


@pytest.fixture
def baseline(tmp_path):
    """The BASELINE process, started before the test's own work; (the process, its result file, its log)."""
    result, log = tmp_path / "baseline.json", tmp_path / "baseline.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", BASELINE, json.dumps(BASELINE_SEEDS), str(tmp_path / "no_prior"), str(result)],
            cwd=ROOT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    yield proc, result, log
    proc.kill()  # a no-op once it has exited


@pytest.mark.slow
def test_quickstart_learns_the_subject_and_prior_preservation_limits_leakage_and_drift(baseline, tmp_path):
    pipe = load_toy_pipeline()
    subject = toy_subject()
    reference = base_reference(pipe)
    before = measure(pipe, subject=subject, reference=reference)
    assert before.fidelity <= 0.1, before  # the base does not already draw the subject for `a sks dog`
    assert np.mean([matches(d, subject) for d in reference]) <= 0.1

    common = dict(pipe=pipe, subject=subject, reference=reference)
    with_prior = study(TRAIN_SEEDS, tmp_path, priors=(True,), **common)[True]
    proc, result, log = baseline  # the same study call for BASELINE_SEEDS, run meanwhile in its own process
    assert proc.wait(timeout=1200) == 0, log.read_text()[-3000:]
    without = Summary(**json.loads(result.read_text()))
    print(f"\nbase: {before.row()}\n{with_prior.table('prior, seed')}\n{without.table('no prior, seed')}")

    assert with_prior.mean["fidelity"] >= FIDELITY_MIN, with_prior.table()
    assert with_prior.mean["spots"] >= SPOTS_MIN, with_prior.table()  # three spots, not one band
    assert with_prior.mean["leakage"] <= LEAKAGE_MAX, with_prior.table()
    for metric in ("leakage", "drift"):  # prior preservation lowers both (same training seed)
        for seed, p, n in zip(BASELINE_SEEDS, with_prior.per_seed, without.per_seed):
            assert p[metric] < n[metric], (metric, seed, with_prior.table(), without.table())
