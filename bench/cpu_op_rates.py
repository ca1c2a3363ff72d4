"""This CPU's rates for a per-operator-kind model of a step (bench/cpu_step_model.py), each on its own operators.

One torch thread, median of repeated calls, nothing from a training step fitted:
- a kind's rate: FLOPs (counted by the plan's own tracker) over seconds of a large call, fp32 and bf16: matmul
  2048^3, 3x3 convolution 2x640x32x32 (forward; weight gradient alone), attention 2x8x1024x80 (forward and backward);
- memory bandwidth: a 32-row matmul against 64 distinct 1280x1280 fp32 weights (330 MB, never in cache): the
  weight bytes over its seconds, what a step's small-row matmuls and element-wise operators are bound by;
- an operator's dispatch: the tiny model's LoRA step at 64 px (FLOPs and bytes ~nil) over the operators its trace
  counts;
- a page fault: filling a fresh anonymous 64 MiB mapping (what glibc serves a block over its ceiling from) against
  filling one already faulted in, over the faults counted.
Prints the rates and their shares of one core's peak (clock x FLOP per cycle, as sdft/run/plan/devices.py derives it).

    python bench/cpu_op_rates.py [--quick] [--json bench/results/cpu_op_rates.jsonl]
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from timing import median_seconds  # noqa: E402  (bench/ on the path first)


def counted_flops(fn) -> int:
    from sdft.run.plan.tracker import LiveBytes

    live = LiveBytes()
    with live:
        fn()
    return live.flops


def kind_rates(scale: int, repeats: int) -> dict[str, float]:
    """GFLOP/s by kind ("gemm", "conv_half", ...: bench/cpu_step_model.py) on large calls; `scale` divides the sizes (--quick)."""
    import torch
    import torch.nn.functional as F

    out = {}
    n, ch, hw, seq = 2048 // scale, 640 // scale, 32 // scale, 1024 // scale
    for dtype, suffix in ((torch.float32, ""), (torch.bfloat16, "_half")):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        x, w = torch.randn(2, ch, hw, hw, dtype=dtype), torch.randn(ch, ch, 3, 3, dtype=dtype)
        grad = torch.randn(2, ch, hw, hw, dtype=dtype)
        q = torch.randn(2, 8, seq, 80, dtype=dtype, requires_grad=True)

        def wgrad():
            torch.ops.aten.convolution_backward(
                grad, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False]
            )

        def attention():
            F.scaled_dot_product_attention(q, q, q).sum().backward()

        calls = {
            "gemm": lambda: torch.mm(a, b),
            "conv": lambda: F.conv2d(x, w, padding=1),
            "conv_wgrad": wgrad,
            "attention": attention,
        }
        for kind, fn in calls.items():
            out[kind + suffix] = counted_flops(fn) / median_seconds(fn, repeats) / 1e9
    return out


def bandwidth_gbps(scale: int) -> float:
    import torch

    weights = [torch.randn(1280 // scale, 1280 // scale) for _ in range(64)]
    x = torch.randn(32, 1280 // scale)

    def run():
        for w in weights:
            torch.mm(x, w)

    return sum(w.numel() * 4 for w in weights) / median_seconds(run, 9) / 1e9


def dispatch_seconds() -> tuple[float, int, float]:
    """(seconds an operator, operators a step, step CPU seconds) of the tiny model's LoRA step, one thread: its
    CPU seconds (bench/plan_accuracy.py) over the operators its trace dispatches (bench/cpu_step_model.py)."""
    from cpu_step_model import step_costs
    from plan_accuracy import CASES, COMMON, measure

    result = measure("tiny-lora-64", "fp32", 1, False, True, False)
    ops = step_costs(CASES["tiny-lora-64"] + COMMON)[0]["ops"]
    return result["step_cpu_seconds"] / ops, ops, result["step_cpu_seconds"]


def fault_seconds() -> float:
    """Filling a fresh anonymous 64 MiB mapping (as glibc serves a block over its mmap ceiling) against filling one
    already faulted in, over the faults counted."""
    import mmap

    import numpy as np

    size = 64 * 2**20

    def fill(m) -> None:
        arr = np.frombuffer(m, dtype=np.float32)
        arr.fill(1.0)
        del arr

    def fresh() -> None:
        m = mmap.mmap(-1, size)
        fill(m)
        m.close()

    kept = mmap.mmap(-1, size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fresh_s = median_seconds(fresh, 9)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
    reused_s = median_seconds(lambda: fill(kept), 9)
    kept.close()
    return (fresh_s - reused_s) / faults if faults else float("nan")


def main() -> None:
    import torch

    from jsonl import emit
    from sdft.run.plan.devices import cpu_core, cpu_flops_per_cycle

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats (a smoke test, not a figure)")
    ap.add_argument("--json", help="append the result (one JSON line) to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    scale, repeats = (8, 2) if args.quick else (1, 5)
    rates = kind_rates(scale, repeats)
    flags, ghz = cpu_core()  # the plan's own reading of this CPU (sdft/run/plan/devices.py)
    fp32, bf16 = cpu_flops_per_cycle(flags)
    shares = {k: v / (ghz * (bf16 if k.endswith("_half") else fp32)) for k, v in rates.items()}
    op_s, ops, tiny_cpu_s = dispatch_seconds()
    result = {
        "bench": "cpu_op_rates",
        "quick": args.quick,
        "gflops": rates,
        "shares_of_core_peak": shares,
        "core_ghz": ghz,
        "flops_per_cycle": [fp32, bf16],
        "bandwidth_gbps": bandwidth_gbps(scale),
        "op_seconds": op_s,
        "tiny_step_ops": ops,
        "tiny_step_cpu_seconds": tiny_cpu_s,
        "fault_seconds": fault_seconds(),
        "torch": torch.__version__,
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
