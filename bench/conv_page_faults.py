"""Page faults and kernel time of convolutions by weight size, one thread (docs/benchmarks.md, stop 31).

A CPU step's kernel time is page faults, and most of a LoRA step's come from convolutions whose weight is over
32 MiB: oneDNN reorders the weight into a buffer of its size on every call, and glibc serves blocks over its
dynamic mmap threshold's ceiling (32 MiB on 64-bit) with a fresh mmap, faulted in again each time. This times the
forward and the input gradient of 3x3 convolutions at the U-Net's widths (at the spatial size SD 1.5 / SDXL run
them at 128-256 px) in fp32 and bf16 and prints user / kernel milliseconds and page faults per call.

    python bench/conv_page_faults.py [--calls 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import resource

import torch
from jsonl import emit  # bench/jsonl.py: the script's own folder is on sys.path

aten = torch.ops.aten
SHAPES = ((1280, 4), (640, 8), (320, 16))  # channels, spatial side


def per_call(fn, calls: int) -> dict:
    fn()  # oneDNN picks and caches its kernel
    t, f = os.times(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    t2, f2 = os.times(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    return {
        "user_ms": (t2.user - t.user) / calls * 1e3,
        "kernel_ms": (t2.system - t.system) / calls * 1e3,
        "faults": (f2 - f) / calls,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--json", help="append the rows (one JSON object a line) to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for dtype in (torch.float32, torch.bfloat16):
        for channels, side in SHAPES:
            w = torch.randn(channels, channels, 3, 3, dtype=dtype)
            x = torch.randn(2, channels, side, side, dtype=dtype)
            y = torch.conv2d(x, w, padding=1)
            grad = torch.ones_like(y)
            row = {
                "dtype": str(dtype).replace("torch.", ""),
                "channels": channels,
                "side": side,
                "weight_mb": w.nbytes / 1e6,
                "weight_pages": w.nbytes // 4096,
                "forward": per_call(lambda: torch.conv2d(x, w, padding=1), args.calls),
                "input_grad": per_call(
                    lambda: aten.convolution_backward(
                        grad, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, False, False]
                    ),
                    args.calls,
                ),
            }
            emit(row, args.json)


if __name__ == "__main__":
    main()
