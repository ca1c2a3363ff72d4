"""The plan's trace cache (sdft/run/plan/trace_cache.py): a second plan of the same run reads the traced step from
disk instead of tracing again (train.py's start-up headline pays the trace once), a setting of the step changes the
key, a damaged entry is traced over, and SDFT_PLAN_CACHE=off always traces."""

from __future__ import annotations

import pytest

from sdft.run.plan import forecast, trace_cache
from sdft.run.plan.arch import architecture
from sdft.run.plan.compose import compose_run, plan_run
from sdft.run.plan.devices import device

BASE = ["data.resolution=64", "trainer.max_steps=5", "callbacks.validation_seeds=[0]"]


def key(overrides):
    cfg = compose_run([*BASE, *overrides])
    return trace_cache.trace_key(cfg, architecture(cfg.model), (64, 64), True, True, (64, 64))


def test_the_key_holds_what_a_step_depends_on():
    assert key([]) == key(["name=other", "seed=7", "logger=none"])  # no part of a step
    assert len({key([]), key(["adapter.rank=8"]), key(["trainer.precision=bf16-mixed"])}) == 3


@pytest.mark.slow  # three tiny plans, two traces
def test_a_second_plan_reads_the_trace_from_disk(monkeypatch, tmp_path):
    monkeypatch.setenv("SDFT_CACHE_DIR", str(tmp_path))
    calls = []
    real = forecast.trace
    monkeypatch.setattr(forecast, "trace", lambda *a, **k: calls.append(a[2]) or real(*a, **k))

    first = plan_run(compose_run(BASE), device("cpu"))
    second = plan_run(compose_run([*BASE, "name=other"]), device("cpu"))
    (entry,) = (tmp_path / "plan_traces").glob("*.json")
    assert len(calls) == 1 and second.phases[0][1].step == first.phases[0][1].step and second.peak == first.peak

    entry.write_text("{not json")  # damaged: traced over
    monkeypatch.setenv("SDFT_PLAN_CACHE", "off")
    plan_run(compose_run(BASE), device("cpu"))
    assert len(calls) == 2 and trace_cache.load(entry.stem) is None  # off: traced, nothing read or written
    monkeypatch.delenv("SDFT_PLAN_CACHE")
    assert trace_cache.load(entry.stem) is None  # still the damaged entry, ignored
