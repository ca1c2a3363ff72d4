#!/usr/bin/env python
"""Bytes of the frozen base's weights with model.quantize (sdft/models/quantize.py) on the SD 1.5 architecture.

Builds the SD 1.5 U-Net and CLIP text encoder with random weights (no download), quantizes them as a run does and
counts the bytes of every weight storage (the inner tensors of quantized weights included). Static memory only: a
measure that contention on the machine does not change (for s/step and peak RSS use bench/train_step.py --quantize).

    python bench/quantize_memory.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from sdft.memory import plain_tensors  # noqa: E402
from sdft.models.quantize import quantize_models  # noqa: E402
from sdft.models.sd15_arch import build_sd15_text_encoder, build_sd15_unet  # noqa: E402


def weight_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        for p in plain_tensors(t):
            storage = p.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def main() -> None:
    rows = []
    for kind, dtype in (
        ("fp32", torch.float32),
        ("bf16", torch.bfloat16),
        ("int8", torch.float32),
        ("fp8", torch.float32),
    ):
        torch.manual_seed(0)
        pipe = SimpleNamespace(unet=build_sd15_unet(dtype), text_encoder=build_sd15_text_encoder(dtype))
        for m in (pipe.unet, pipe.text_encoder):
            m.requires_grad_(False)
        quantize_models(pipe, kind if kind in ("int8", "fp8") else None)
        rows.append((kind, weight_bytes(pipe.unet) / 2**20, weight_bytes(pipe.text_encoder) / 2**20))
        del pipe
    print("| frozen base | U-Net MiB | text encoder MiB |")
    print("|---|---|---|")
    for kind, u, t in rows:
        print(f"| {kind} | {u:.0f} | {t:.0f} |")


if __name__ == "__main__":
    main()
