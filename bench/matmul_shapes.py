"""The matmuls of a plan's traced training step, each timed alone with its weight warm and cold (one thread).

Records every mm / addmm / bmm shape the plan's fake-tensor trace of the step runs (sdft/run/plan: the same overrides
as train.py), then times each shape on real tensors: warm (the same weight again and again, in cache) and cold (a
fresh copy of the weight for each call, >= 1.5 GB cycled, as a step reads each weight once). Prints the CPU seconds
of the step's matmuls both ways and their FLOPs: against the matmul time inside the step (bench/plan_accuracy.py
--op-times) and the forecast's (FLOPs / (one core's peak x the cpu entry's efficiency)); docs/benchmarks.md, stop 31.

    python bench/matmul_shapes.py model=sdxl data.resolution=128 [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter

import torch

aten = torch.ops.aten
MATMULS = (aten.mm, aten.addmm, aten.bmm)


def traced_shapes(overrides: list[str]) -> Counter:
    """(op, batch, m, k, n, dtype) -> calls in the traced training step (the sampling trace left out)."""
    os.environ["SDFT_PLAN_CACHE"] = "off"
    from sdft.run.plan import trace, tracker
    from sdft.run.plan.compose import compose_run, plan_run
    from sdft.run.plan.devices import cpu_device

    seen: Counter = Counter()
    recording = [True]
    dispatch, generation = tracker.LiveBytes.__torch_dispatch__, trace._trace_generation

    def record(self, func, types, args=(), kwargs=None):
        op = func._overloadpacket
        if op in MATMULS and recording[0]:
            a, b = (args[1], args[2]) if op is aten.addmm else (args[0], args[1])
            batch, m, k = a.shape if op is aten.bmm else (1, *a.shape)
            seen[(op.__name__, batch, m, k, b.shape[-1], str(a.dtype).replace("torch.", ""))] += 1
        return dispatch(self, func, types, args, kwargs)

    def without(*a, **kw):
        recording[0] = False
        try:
            return generation(*a, **kw)
        finally:
            recording[0] = True

    tracker.LiveBytes.__torch_dispatch__, trace._trace_generation = record, without
    try:
        plan_run(compose_run(overrides), cpu_device())
    finally:
        tracker.LiveBytes.__torch_dispatch__, trace._trace_generation = dispatch, generation
    return seen


def timed(op: str, batch: int, m: int, k: int, n: int, dtype: str) -> tuple[float, float]:
    """CPU seconds of one call: (warm, cold)."""
    dt = getattr(torch, dtype)
    a = torch.randn(batch, m, k, dtype=dt) if op == "bmm" else torch.randn(m, k, dtype=dt)
    bias = torch.randn(n, dtype=dt)

    def weight():  # laid out as the step has it: a Linear's (n, k) weight transposed for addmm
        if op == "bmm":
            return torch.randn(batch, k, n, dtype=dt)
        return torch.randn(n, k, dtype=dt).t() if op == "addmm" else torch.randn(k, n, dtype=dt)

    def call(w):
        return torch.bmm(a, w) if op == "bmm" else torch.addmm(bias, a, w) if op == "addmm" else torch.mm(a, w)

    w = weight()
    call(w), call(w)
    calls, start = 0, time.process_time()
    while time.process_time() - start < 0.15 or calls < 3:
        call(w)
        calls += 1
    warm = (time.process_time() - start) / calls
    copies = max(2, min(400, int(1.5e9 // (batch * k * n * dt.itemsize))))
    weights = [weight() for _ in range(copies)]
    call(weights[0])
    start = time.process_time()
    for w in weights:
        call(w)
    return warm, (time.process_time() - start) / copies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, as train.py takes them")
    ap.add_argument("--json", help="append the result (one JSON object) to this file")
    args = ap.parse_args()
    shapes = traced_shapes(args.overrides)
    torch.set_num_threads(1)
    flops = warm = cold = 0.0
    rows = []
    for (op, batch, m, k, n, dtype), count in shapes.items():
        w, c = timed(op, batch, m, k, n, dtype)
        f = 2 * batch * m * k * n
        flops, warm, cold = flops + f * count, warm + w * count, cold + c * count
        rows.append({"op": op, "shape": [batch, m, k, n], "dtype": dtype, "calls": count, "warm_s": w, "cold_s": c})
    result = {"overrides": args.overrides, "gflop": flops / 1e9, "warm_cpu_s": warm, "cold_cpu_s": cold, "shapes": rows}
    print(f"{len(rows)} shapes, {flops / 1e9:.1f} GFLOP: {warm:.2f} CPU s warm, {cold:.2f} CPU s cold (one thread)")
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
