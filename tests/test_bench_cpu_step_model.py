"""bench/cpu_op_rates.py and bench/cpu_step_model.py (stop 32's per-operator-kind model of a CPU step) run and
count what they say they count: a bench that silently breaks leaves docs/benchmarks.md unreproducible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


@pytest.mark.slow
def test_rates_bench_measures_every_rate(tmp_path):
    out = tmp_path / "rates.jsonl"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "cpu_op_rates.py"), "--quick", "--json", str(out)],
        check=True,
        cwd=REPO,
        capture_output=True,
        timeout=600,
    )
    result = json.loads(out.read_text().splitlines()[-1])
    kinds = {f"{k}{h}" for k in ("gemm", "conv", "conv_wgrad", "attention") for h in ("", "_half")}
    assert set(result["gflops"]) == kinds and all(v > 0 for v in result["gflops"].values())
    assert result["tiny_step_ops"] > 1000 and result["op_seconds"] > 0
    assert result["bandwidth_gbps"] > 0 and result["fault_seconds"] > 0


def test_step_costs_split_the_flops_by_kind():
    """The tiny model's traced LoRA step: its FLOPs by kind add up to the plan's count, nothing is a weight gradient
    (LoRA: the convolutions are frozen), bytes and operators are counted, and no block is over the mmap ceiling."""
    from cpu_step_model import model_seconds, step_costs
    from plan_accuracy import CASES, COMMON

    cache = os.environ.get("SDFT_PLAN_CACHE")
    costs, forecast = step_costs(CASES["tiny-lora-64"] + COMMON)
    assert os.environ.get("SDFT_PLAN_CACHE") == cache  # the bench turns the cache off for its own trace only
    assert sum(costs["flops"].values()) == forecast.step.flops > 0
    assert "conv_wgrad" not in costs["flops"] and {"gemm", "conv", "attention"} <= set(costs["flops"])
    assert costs["bytes"] > 0 and costs["ops"] > 1000 and costs["fresh_bytes"] == 0
    rates = {"gflops": dict.fromkeys(costs["flops"], 100.0), "op_seconds": 1e-5, "fault_seconds": 1e-6}
    terms = model_seconds(costs, rates, bandwidth=10.0)
    assert terms["flops"] == pytest.approx(forecast.step.flops / 100e9)
    assert terms["memory"] == pytest.approx(costs["bytes"] / 10e9) and terms["dispatch"] == costs["ops"] * 1e-5
