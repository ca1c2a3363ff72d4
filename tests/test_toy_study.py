"""sdft.toy.study's plumbing (fast: training and measuring stubbed; the real study is tests/test_toy_learning.py)."""

from __future__ import annotations

import json

import pytest

from sdft.cli import main as sdft_main
from sdft.toy import study as study_mod
from sdft.toy.measure import Measurement
from sdft.toy.study import NO_PRIOR, parse_seeds


def test_study_trains_each_seed_with_and_without_prior_and_logs_each_run(tmp_path, monkeypatch, capsys):
    trained = []

    def fake_lora(seed, out_dir, overrides=(), reuse=False):
        trained.append((seed, list(overrides)))
        return tmp_path / f"lora{seed}"

    def fake_measure(pipe, lora, *, subject, reference, guidance, n=32):
        with_prior = "prior.enabled=false" not in trained[-1][1]
        return Measurement(
            0.9 if with_prior else 0.8,
            0.05 if with_prior else 0.6,
            0.1 + guidance / 100,
            identifier=[{"cls": "dog", "colour": "red"}],
            classes=[],
        )

    monkeypatch.setattr(study_mod, "quickstart_lora", fake_lora)
    monkeypatch.setattr(study_mod, "measure", fake_measure)
    monkeypatch.setattr(study_mod, "toy_subject", lambda: {"cls": "dog", "colour": "blue"})
    monkeypatch.setattr(study_mod, "base_reference", lambda pipe, guidance, n=32: [])
    monkeypatch.setattr("sdft.models.toy_weights.load_toy_pipeline", lambda: object())

    assert (
        sdft_main(
            ["toy", "study", "--seeds", "3", "4", "--out", str(tmp_path), "-o", "optim.lr=1e-3", "--guidance", "5"]
        )
        == 0
    )

    assert trained == [
        (3, ["optim.lr=1e-3"]),
        (4, ["optim.lr=1e-3"]),
        (3, ["optim.lr=1e-3", *NO_PRIOR]),
        (4, ["optim.lr=1e-3", *NO_PRIOR]),
    ]
    rows = [json.loads(line) for line in (tmp_path / "study.jsonl").read_text().splitlines()]
    assert [(r["seed"], r["prior"]) for r in rows] == [(3, True), (4, True), (3, False), (4, False)]
    assert rows[0]["misses"] == {"cls": 0, "colour": 1} and rows[0]["guidance"] == 5.0
    out = capsys.readouterr().out
    assert "| seed | fidelity | spots | leakage | drift |" in out
    assert "| mean ± sd | 0.900 ± 0.000 | 0.000 ± 0.000 | 0.050 ± 0.000 | 0.150 ± 0.000 |" in out
    assert "| mean ± sd | 0.800 ± 0.000 | 0.000 ± 0.000 | 0.600 ± 0.000 | 0.150 ± 0.000 |" in out


def test_study_takes_seed_ranges_and_reports_each_seed_then_mean_and_sd(tmp_path, monkeypatch, capsys):
    trained = []
    figures = {5: (0.5, 0.0), 6: (0.75, 0.5), 7: (1.0, 1.0), 9: (1.0, 0.5)}  # fidelity, spots per seed

    def fake_lora(seed, out_dir, overrides=(), reuse=False):
        trained.append(seed)
        return tmp_path / f"lora{seed}"

    def fake_measure(pipe, lora, *, subject, reference, guidance, n=32):
        fidelity, spots = figures[trained[-1]]
        return Measurement(fidelity, 0.0, 0.1, spots=spots, identifier=[{"cls": "dog", "marks": 3}], classes=[])

    monkeypatch.setattr(study_mod, "quickstart_lora", fake_lora)
    monkeypatch.setattr(study_mod, "measure", fake_measure)
    monkeypatch.setattr(study_mod, "toy_subject", lambda: {"cls": "dog"})
    monkeypatch.setattr(study_mod, "base_reference", lambda pipe, guidance, n=32: [])
    monkeypatch.setattr("sdft.models.toy_weights.load_toy_pipeline", lambda: object())

    assert sdft_main(["toy", "study", "--seeds", "5-7", "9", "6", "--out", str(tmp_path), "--no-baseline"]) == 0

    assert trained == [5, 6, 7, 9]
    out = capsys.readouterr().out
    assert "| 6 | 0.750 | 0.500 | 0.000 | 0.100 |" in out
    assert "| mean ± sd | 0.812 ± 0.239 | 0.500 ± 0.408 | 0.000 ± 0.000 | 0.100 ± 0.000 |" in out
    rows = [json.loads(line) for line in (tmp_path / "study.jsonl").read_text().splitlines()]
    assert [r["spots"] for r in rows] == [0.0, 0.5, 1.0, 0.5] and rows[0]["marks"] == {"3": 1}


def test_study_samples_and_reuse_reach_the_measure_and_the_training(tmp_path, monkeypatch, capsys):
    calls = {"lora": [], "measure": [], "reference": []}

    def fake_lora(seed, out_dir, overrides=(), reuse=False):
        calls["lora"].append((seed, reuse))
        return tmp_path / f"lora{seed}"

    def fake_measure(pipe, lora, *, subject, reference, guidance, n=32):
        calls["measure"].append(n)
        return Measurement(0.9, 0.0, 0.1, identifier=[{"cls": "dog"}], classes=[])

    def fake_reference(pipe, guidance, n=32):
        calls["reference"].append(n)
        return []

    monkeypatch.setattr(study_mod, "quickstart_lora", fake_lora)
    monkeypatch.setattr(study_mod, "measure", fake_measure)
    monkeypatch.setattr(study_mod, "toy_subject", lambda: {"cls": "dog"})
    monkeypatch.setattr(study_mod, "base_reference", fake_reference)
    monkeypatch.setattr("sdft.models.toy_weights.load_toy_pipeline", lambda: object())

    args = ["toy", "study", "--seeds", "1", "2", "--out", str(tmp_path), "--no-baseline", "--samples", "160", "--reuse"]
    assert sdft_main(args) == 0
    assert calls == {"lora": [(1, True), (2, True)], "measure": [160, 160], "reference": [160]}
    rows = [json.loads(line) for line in (tmp_path / "study.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in rows] == [160, 160]
    assert "160 generations per prompt" in capsys.readouterr().out


def test_study_refuses_zero_samples(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(study_mod, "quickstart_lora", lambda *a, **k: pytest.fail("trained despite --samples 0"))
    assert sdft_main(["toy", "study", "--out", str(tmp_path), "--samples", "0"]) == 2
    assert "--samples 0" in capsys.readouterr().err


def test_reuse_returns_a_finished_runs_lora_without_training(tmp_path, monkeypatch):
    import hashlib

    import sdft.run.train
    from sdft.toy.measure import quickstart_lora

    overrides = ["optim.lr=4e-3"]
    run_dir = tmp_path / f"seed3-{hashlib.sha1(repr(overrides).encode()).hexdigest()[:8]}"
    lora = run_dir / "main" / "lora" / "pytorch_lora_weights.safetensors"
    lora.parent.mkdir(parents=True)
    lora.write_bytes(b"x")
    (run_dir / "summary.json").write_text(json.dumps({"output": str(lora)}))
    monkeypatch.setattr(sdft.run.train, "run", lambda cfg: pytest.fail("trained a finished run again"))
    assert quickstart_lora(3, tmp_path, overrides, reuse=True) == lora


@pytest.mark.parametrize("seeds", [["4-2"], ["x"], ["-1"]])
def test_study_rejects_bad_seeds_before_training(seeds, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(study_mod, "quickstart_lora", lambda *a, **k: pytest.fail("trained despite bad seeds"))
    assert sdft_main(["toy", "study", "--seeds", *seeds, "--out", str(tmp_path)]) == 2
    assert "Bad seed" in capsys.readouterr().err
    assert parse_seeds(["0-4", "10", "3"]) == [0, 1, 2, 3, 4, 10]
