"""CPU time of the SD 1.5 U-Net's convolutions, forward and each half of the backward, one thread, per FLOP.

The plan forecasts a step's time as FLOPs / (peak x efficiency), with the efficiency measured on LoRA steps, which
run convolutions forward and backward to the input only: the convolution weights are frozen. A full fine-tune also
computes every convolution's weight gradient, and on this CPU that kernel ran far below the others (docs/
benchmarks.md: a full fine-tune's step took ~7 s more than the FLOPs at the LoRA steps' rate and the AdamW step
explain). This times the three kernels on the convolutions of the real architecture (shapes recorded from a forward
of the SD 1.5 U-Net on meta tensors, each distinct shape weighted by how often it occurs) with
`aten.convolution_backward`'s output mask selecting input or weight gradient, and prints each kernel's FLOPs per
CPU second as a share of one core's FP32 peak (sdft/run/plan/devices.py). CPU seconds, so a shared core does not
inflate them.

    python bench/conv_grad_cost.py [--resolution 256] [--batch 2] [--repeats 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter

import torch
from jsonl import emit  # bench/jsonl.py: the script's own folder is on sys.path
from torch.utils.flop_counter import conv_flop_count

from sdft.models.sd15_arch import build_sd15_unet
from sdft.run.plan.devices import cpu_device

aten = torch.ops.aten


def conv_shapes(resolution: int, batch: int) -> Counter:
    """(input shape, weight shape, stride, padding) of every Conv2d call in a U-Net forward -> how many times."""
    with torch.device("meta"):
        unet = build_sd15_unet(device="meta")
    seen: Counter = Counter()

    def hook(module, args, _out):
        seen[(tuple(args[0].shape), tuple(module.weight.shape), module.stride, module.padding)] += 1

    for m in unet.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    side = resolution // 8
    with torch.device("meta"), torch.no_grad():
        unet(torch.empty(batch, 4, side, side), torch.tensor([500]), torch.empty(batch, 77, 768))
    return seen


def cpu_seconds(fn, repeats: int) -> float:
    fn()  # oneDNN's first call picks and caches its kernel
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def time_shape(x_shape, w_shape, stride, padding, repeats: int) -> dict[str, float]:
    """Seconds of the forward, the input gradient and the weight gradient of one convolution."""
    x, w = torch.randn(x_shape), torch.randn(w_shape)
    out = torch.nn.functional.conv2d(x, w, None, stride, padding)
    grad = torch.randn_like(out)
    args = (grad, x, w, None, stride, padding, (1, 1), False, (0, 0), 1)
    return {
        "forward": cpu_seconds(lambda: torch.nn.functional.conv2d(x, w, None, stride, padding), repeats),
        "input_grad": cpu_seconds(lambda: aten.convolution_backward(*args, [True, False, False]), repeats),
        "weight_grad": cpu_seconds(lambda: aten.convolution_backward(*args, [False, True, False]), repeats),
        # both in one call, as autograd asks when the weight trains (a full fine-tune)
        "both_grads": cpu_seconds(lambda: aten.convolution_backward(*args, [True, True, False]), repeats),
        "flops": conv_flop_count(list(x_shape), list(w_shape), list(out.shape), transposed=False),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="append the result line here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    core_peak = cpu_device().fp32_tflops * 1e12 / len(os.sched_getaffinity(0))
    totals = dict.fromkeys(("forward", "input_grad", "weight_grad", "both_grads"), 0.0)
    flops = 0
    shapes = conv_shapes(args.resolution, args.batch)
    for (x_shape, w_shape, stride, padding), count in sorted(shapes.items(), key=lambda kv: -kv[1]):
        t = time_shape(x_shape, w_shape, stride, padding, args.repeats)
        flops += count * t["flops"]
        for k in totals:
            totals[k] += count * t[k]
    result = {
        "torch": torch.__version__,
        "threads": 1,
        "resolution": args.resolution,
        "batch": args.batch,
        "conv_calls": sum(shapes.values()),
        "distinct_shapes": len(shapes),
        "gflop_each": round(flops / 1e9, 2),  # a convolution's FLOPs: the same for each of the three kernels
        "cpu_s": {k: round(v, 3) for k, v in totals.items()},
        "share_of_core_peak": {k: round(flops / v / core_peak, 3) for k, v in totals.items() if k != "both_grads"},
        # the weight gradient's cost where autograd computes it with the input gradient: both minus input alone
        "weight_grad_in_both_share": round(flops / (totals["both_grads"] - totals["input_grad"]) / core_peak, 3),
        "core_peak_gflops": round(core_peak / 1e9, 1),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
