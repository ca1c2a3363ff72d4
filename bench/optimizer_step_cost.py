"""CPU time of one torch AdamW step per trained parameter and per trained tensor, on this CPU, one thread.

The plan's time forecast counts FLOPs, and an optimizer step has almost none (element-wise updates): it is bound by
memory traffic (each of p, grad, exp_avg, exp_avg_sq read and most written, over several passes). A full fine-tune
steps 860 M U-Net parameters, so its step time is far above its FLOP count (docs/benchmarks.md). This measures the
two costs the plan adds (sdft/run/plan/devices.py): seconds per parameter element (large tensors) and per tensor
(many small ones: LoRA's), as the framework builds AdamW (torch.optim.AdamW, weight decay 1e-2, the default
single-tensor path on the CPU). CPU seconds of the process, so a shared core does not inflate them.

    python bench/optimizer_step_cost.py [--elements 100e6] [--small 2000]
"""

from __future__ import annotations

import argparse
import time

import torch
from jsonl import emit  # bench/jsonl.py: the script's own folder is on sys.path


def step_cpu_seconds(params: list[torch.Tensor], steps: int = 3) -> float:
    """Mean CPU seconds of an AdamW step over `params` (gradients set), after a first step that makes the state."""
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    opt.step()
    start = time.process_time()
    for _ in range(steps):
        opt.step()
    return (time.process_time() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elements", type=float, default=100e6, help="parameter elements in the large-tensor case")
    ap.add_argument("--small", type=int, default=2000, help="tensors in the small-tensor case (LoRA-like, 4x320)")
    ap.add_argument("--json", help="append the result here")
    args = ap.parse_args()
    if args.elements < 1 or args.small < 1:
        ap.error("--elements and --small must be at least 1")
    torch.set_num_threads(1)
    side = min(1280 * 1280 * 3, int(args.elements))  # a U-Net conv's 4.9 M elements (fewer: one tensor of them)
    large = [torch.nn.Parameter(torch.randn(side)) for _ in range(int(args.elements // side))]
    n_large, n_tensors = sum(p.numel() for p in large), len(large)
    t_large = step_cpu_seconds(large)
    del large
    small = [torch.nn.Parameter(torch.randn(4, 320)) for _ in range(args.small)]
    n_small = sum(p.numel() for p in small)
    t_small = step_cpu_seconds(small)
    per_element = t_large / n_large  # the per-tensor cost is negligible over a few dozen large tensors
    per_tensor = max(t_small - per_element * n_small, 0.0) / args.small
    result = {
        "torch": torch.__version__,
        "threads": 1,
        "large": {"tensors": n_tensors, "elements": n_large, "step_cpu_s": round(t_large, 4)},
        "small": {"tensors": args.small, "elements": n_small, "step_cpu_s": round(t_small, 4)},
        "ns_per_element": round(per_element * 1e9, 3),
        "us_per_tensor": round(per_tensor * 1e6, 2),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
