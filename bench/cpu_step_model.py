"""A per-operator-kind model of a CPU training step, against measured steps (stop 32; not the plan's forecast).

The plan times a CPU step as FLOPs at one measured share of the peak (sdft/run/plan/devices.py). This asks whether
a model built from the operators' own rates does better: the plan's trace of the step (fake tensors) counts FLOPs by
kind (matmul, convolution, convolution weight gradient, attention; fp32 or 16-bit inputs), the bytes every operator
that is not a view reads and writes, the operators dispatched, and the bytes of fresh blocks over glibc's 32 MiB mmap
ceiling (outputs, and the reorder buffer of a convolution with fp32 weights over it, on every call). Seconds:

    sum(FLOPs of a kind / its rate) + bytes / bandwidth + operators x dispatch + fresh bytes / 4096 x a fault
    (+ the plan's optimizer term)

with every rate from bench/cpu_op_rates.py (its newest line in --rates; none fitted to a step), compared with the
step CPU seconds of bench/plan_accuracy.py results (--measured, one thread). Results: docs/benchmarks.md, stop 32.

    python bench/cpu_step_model.py --case sd15-lora-256 [--case ...] [--bandwidth GBPS]
        [--rates bench/results/cpu_op_rates.jsonl] [--measured bench/results/cpu_step_model_measured.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
MMAP_CEILING = 32 * 2**20
KINDS = {"convolution": "conv", "convolution_backward": "conv"}


def kind_of(name: str) -> str:
    if name in KINDS:
        return KINDS[name]
    return "attention" if "scaled_dot_product" in name else "gemm"


def counting_mode():
    """The plan's tracker (sdft/run/plan/tracker.py) with the costs counted on every operator: each operator's FLOPs
    are what the tracker itself added (its FLOPs, 16-bit share, weight gradients), split by kind."""
    import torch
    from torch.utils._pytree import tree_flatten

    from sdft.run.plan import tracker
    from sdft.run.plan.tracker import LiveBytes

    def nbytes(t) -> int:
        return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0

    class Counting(LiveBytes):
        def __init__(self):
            super().__init__()
            self.costs = {"flops": {}, "bytes": 0, "ops": 0, "fresh_bytes": 0}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            before = self.flops, self.half_flops, self.weight_grad_flops
            out = super().__torch_dispatch__(func, types, args, kwargs)
            if func is tracker._DEVICE:
                return out
            c = self.costs
            c["ops"] += 1
            if func.is_view:
                return out
            written = [nbytes(t) for t in tree_flatten(out)[0]]
            c["bytes"] += sum(written) + sum(nbytes(t) for t in tree_flatten((args, kwargs or {}))[0])
            c["fresh_bytes"] += sum(n for n in written if n > MMAP_CEILING)
            name = func._overloadpacket.__name__
            if name in KINDS:
                weight = args[1] if name == "convolution" else args[2]
                if weight.dtype == torch.float32 and nbytes(weight) > MMAP_CEILING:
                    c["fresh_bytes"] += nbytes(weight)
            flops, half, wgrad = (
                now - then for now, then in zip((self.flops, self.half_flops, self.weight_grad_flops), before)
            )
            suffix = "_half" if half else ""
            for key, n in ((kind_of(name) + suffix, flops - wgrad), ("conv_wgrad", wgrad)):
                if n:
                    c["flops"][key] = c["flops"].get(key, 0) + n
            return out

    return Counting


def step_costs(overrides: list[str], threads: int = 1):
    """(costs of one traced training step, the plan's forecast of the phase) for plan_accuracy-style overrides."""
    from sdft.run.plan import trace as trace_mod
    from sdft.run.plan.compose import compose_run, plan_run
    from sdft.run.plan.devices import cpu_device

    modes = []
    original = trace_mod.LiveBytes
    counting = counting_mode()

    def make():
        mode = counting()
        modes.append(mode)
        return mode

    trace_mod.LiveBytes = make  # the step's mode is the first made; the sampling call's the second
    cache = os.environ.get("SDFT_PLAN_CACHE")
    os.environ["SDFT_PLAN_CACHE"] = "off"  # a cached trace would run no mode: traced, for this call only
    try:
        plan = plan_run(compose_run(overrides), cpu_device(threads))
    finally:
        trace_mod.LiveBytes = original
        if cache is None:
            os.environ.pop("SDFT_PLAN_CACHE")
        else:
            os.environ["SDFT_PLAN_CACHE"] = cache
    forecast = plan.phases[0][1]
    return modes[0].costs, forecast  # the optimizer (counted, not traced) is the plan's own term


def model_seconds(costs: dict, rates: dict, bandwidth: float) -> dict:
    flops = sum(n / (rates["gflops"][k] * 1e9) for k, n in costs["flops"].items())
    return {
        "flops": flops,
        "memory": costs["bytes"] / (bandwidth * 1e9),
        "dispatch": costs["ops"] * rates["op_seconds"],
        "page faults": costs["fresh_bytes"] / 4096 * rates["fault_seconds"],
    }


def main() -> None:
    from plan_accuracy import CASES, COMMON

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES), required=True)
    ap.add_argument("--rates", default=str(REPO / "bench/results/cpu_op_rates.jsonl"))
    ap.add_argument("--measured", default=str(REPO / "bench/results/cpu_step_model_measured.jsonl"))
    ap.add_argument("--bandwidth", type=float, help="GB/s instead of the rates file's")
    args = ap.parse_args()
    rates = json.loads(Path(args.rates).read_text().splitlines()[-1])
    measured = {}
    for line in Path(args.measured).read_text().splitlines():
        row = json.loads(line)
        measured.setdefault(row["case"], []).append(row["step_cpu_seconds"])
    bandwidth = args.bandwidth or rates["bandwidth_gbps"]
    for case in args.case:
        costs, forecast = step_costs(CASES[case] + COMMON)
        terms = model_seconds(costs, rates, bandwidth)
        terms["optimizer"] = forecast.optimizer_seconds
        total = sum(terms.values())
        runs = measured.get(case, [])
        row = {
            "case": case,
            "bandwidth_gbps": bandwidth,
            "costs": costs,
            "model_terms": terms,
            "model_seconds": total,
            "plan_seconds": forecast.step_seconds,  # the plan's forecast, one core
            "measured_cpu_seconds": runs,
        }
        if runs:
            mean = sum(runs) / len(runs)
            row["model_error"], row["plan_error"] = total / mean - 1, forecast.step_seconds / mean - 1
        print(json.dumps(row))


if __name__ == "__main__":
    main()
