"""DreamBooth learns the toy subject, and prior preservation keeps its class prompt from drifting.

The quickstart (`+experiment=quickstart`) is trained with two seeds with prior preservation and one without, and each
LoRA is measured by sdft.toy.measure at fixed generation seeds: fidelity (share of `a sks dog` generations matching
the subject on class, body colour, head colour and pattern), leakage (the same share for `a dog`) and drift (mean
total-variation distance of the `a dog` attribute distributions from the base's). Three runs: 384 s on the shared
2-core machine (load average 3-8; the former ten runs took 529 s); the five-seed study behind the bounds is
`python -m sdft.toy.study` (its table is in sdft/toy/MODEL_CARD.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from sdft.toy.measure import base_reference, matches, measure, toy_subject
from sdft.toy.study import study
from sdft.toy.weights import load_toy_pipeline

TRAIN_SEEDS = (0, 1)  # the study's first seeds, not chosen for their figures
BASELINE_SEEDS = (0,)  # without prior preservation (a prefix of TRAIN_SEEDS: compared seed by seed)
# The five-seed study (sdft/toy/MODEL_CARD.md), with prior preservation: fidelity 0.688 ± 0.113, leakage 0.163 ± 0.087
# (seeds 0 and 1: 0.766 and 0.219); without (seeds 0, 1): leakage 0.766, drift 0.428. The bounds are the five-seed
# mean minus / plus about two standard deviations of a two-seed mean. The targets (fidelity >= 0.8, leakage
# <= 0.1) are NOT met by the shipped quickstart; the old recipe (batch 2: seeds 0, 1 fidelity 0.41) fails this bound.
FIDELITY_MIN = 0.5
LEAKAGE_MAX = 0.3


@pytest.mark.slow
def test_quickstart_learns_the_subject_and_prior_preservation_limits_leakage_and_drift(tmp_path):
    pipe = load_toy_pipeline()
    subject = toy_subject()
    reference = base_reference(pipe)
    before = measure(pipe, subject=subject, reference=reference)
    assert before.fidelity <= 0.1, before  # the base does not already draw the subject for `a sks dog`
    assert np.mean([matches(d, subject) for d in reference]) <= 0.1

    common = dict(pipe=pipe, subject=subject, reference=reference)
    with_prior = study(TRAIN_SEEDS, tmp_path, priors=(True,), **common)[True]
    without = study(BASELINE_SEEDS, tmp_path, priors=(False,), **common)[False]
    print(f"\nbase: {before.row()}\n{with_prior.table('prior, seed')}\n{without.table('no prior, seed')}")

    assert with_prior.mean["fidelity"] >= FIDELITY_MIN, with_prior.table()
    assert with_prior.mean["leakage"] <= LEAKAGE_MAX, with_prior.table()
    for metric in ("leakage", "drift"):  # prior preservation lowers both (same training seed)
        for seed, p, n in zip(BASELINE_SEEDS, with_prior.per_seed, without.per_seed):
            assert p[metric] < n[metric], (metric, seed, with_prior.table(), without.table())
