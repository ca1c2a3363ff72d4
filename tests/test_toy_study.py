"""sdft.toy.study's plumbing (fast: training and measuring stubbed; the real study is tests/test_toy_learning.py)."""

from __future__ import annotations

import json

from sdft.toy import study as study_mod
from sdft.toy.measure import Measurement
from sdft.toy.study import NO_PRIOR


def test_study_trains_each_seed_with_and_without_prior_and_logs_each_run(tmp_path, monkeypatch, capsys):
    trained = []

    def fake_lora(seed, out_dir, overrides=()):
        trained.append((seed, list(overrides)))
        return tmp_path / f"lora{seed}"

    def fake_measure(pipe, lora, *, subject, reference, guidance):
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
    monkeypatch.setattr(study_mod, "base_reference", lambda pipe, guidance: [])
    monkeypatch.setattr("sdft.toy.weights.load_toy_pipeline", lambda: object())

    study_mod.main(["--seeds", "3", "4", "--out", str(tmp_path), "-o", "optim.lr=1e-3", "--guidance", "5"])

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
    assert "| mean ± sd | 0.900 ± 0.000 | 0.050 ± 0.000 | 0.150 ± 0.000 |" in out
    assert "| mean ± sd | 0.800 ± 0.000 | 0.600 ± 0.000 | 0.150 ± 0.000 |" in out
