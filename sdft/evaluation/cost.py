"""Cost of a target: training (params, wall time, img/s, peak memory, from the phases' summaries and configs),
its files (adapter size) and inference (seconds per image without the LoRA, with it unfused, and fused)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from sdft.embeddings.files import DIFFUSERS_NAME
from sdft.evaluation.targets import Target


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def adapter_bytes(target: Target) -> int | None:
    """What the fine-tune adds on disk: its LoRA files, and for a full fine-tune its trained models' folders."""
    if target.kind == "base":
        return None
    total = sum(_size(Path(f)) for f in target.loras)
    total += sum(_size(Path(f)) for f in target.embeddings)  # textual inversion; a pivotal LoRA's embedding beside it:
    total += sum(
        _size(Path(f).parent / DIFFUSERS_NAME) for f in target.loras if (Path(f).parent / DIFFUSERS_NAME).is_file()
    )
    if target.model != target.base_model:
        folder = Path(target.model)
        trained = [s for s in target.phases if s["adapter"] == "full"]
        parts = ["unet"] + (
            ["text_encoder"] if any(s["parameters"]["text_encoder"]["trainable"] for s in trained) else []
        )
        total += sum(_size(folder / part) for part in parts if (folder / part).exists())
    return total


def images_per_step(cfg) -> int:
    """Images in one optimizer step: batch size (doubled by the paired class images with prior preservation) x
    gradient accumulation x devices."""
    devices = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1
    per_batch = cfg.data.batch_size * (2 if cfg.prior.enabled else 1)
    return per_batch * cfg.trainer.accumulate_grad_batches * max(devices, 1) * cfg.trainer.num_nodes


def training_cost(target: Target) -> dict:
    """Trainable parameters, steps, wall time, img/s and peak memory summed over the phases the target holds."""
    if not target.phases:
        return {}
    params = sum(v["trainable"] for s in target.phases for v in s["parameters"].values())  # + "embedding" vectors
    seconds = sum(s.get("train_seconds", 0.0) for s in target.phases)
    steps = sum(s.get("steps", 0) for s in target.phases)
    if all(s.get("images_per_sec") is not None for s in target.phases):  # measured by TrainStats
        images = sum(s["images_per_sec"] * s.get("train_seconds", 0.0) for s in target.phases)
    else:  # older runs: counted from the config
        images = sum(s.get("steps", 0) * images_per_step(c) for s, c in zip(target.phases, target.configs))
    peaks = [s["peak_memory_gb"] for s in target.phases if s.get("peak_memory_gb") is not None]
    return {
        "steps": steps,
        "trainable_params": params,
        "train_seconds": round(seconds, 2),
        "train_img_per_s": round(images / seconds, 3) if seconds else None,
        "train_peak_gb": round(max(peaks), 3) if peaks else None,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_image(generator, params, n: int) -> float:
    """Median wall time of `n` single images (after one warm-up image), with the LoRAs of `params`."""
    from dataclasses import replace

    one = replace(params, batch_size=1, batch_count=1)
    generator.generate(one, seeds=[0])
    _sync(generator.device)
    times = []
    for i in range(max(n, 1)):
        start = time.perf_counter()
        generator.generate(one, seeds=[i + 1])
        _sync(generator.device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]  # the median: robust to a busy machine


def inference_cost(generator, params, n: int) -> dict:
    """s/image without LoRA, with the LoRA(s) of `params` unfused, and fused (diffusers fuse_lora/unfuse_lora);
    peak GPU memory (GiB) of the unfused setting when on CUDA."""
    from dataclasses import replace

    out = {"infer_s": None, "infer_s_lora": None, "infer_s_fused": None, "infer_peak_gb": None}
    cuda = generator.device.type == "cuda"
    out["infer_s"] = round(seconds_per_image(generator, replace(params, loras=[]), n), 4)
    if not params.loras:
        return out
    if cuda:
        torch.cuda.reset_peak_memory_stats(generator.device)
    out["infer_s_lora"] = round(seconds_per_image(generator, params, n), 4)
    if cuda:
        out["infer_peak_gb"] = round(torch.cuda.max_memory_allocated(generator.device) / 2**30, 3)
    generator.set_loras(params.loras)
    generator.pipe.fuse_lora()
    try:
        out["infer_s_fused"] = round(seconds_per_image(generator, params, n), 4)
    finally:
        generator.pipe.unfuse_lora()
    return out
