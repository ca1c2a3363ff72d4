#!/usr/bin/env python
"""SDXL training-step benchmark: the real SDXL base architecture (random weights, sdft/models/sdxl_arch.py, no
download) trained by the framework's step (``DreamBoothModule`` with both text towers and SDXL's time ids, driven by
a real ``lightning.Trainer``: bench/step_harness.py's framework round) on synthetic batches shaped like the
DataModule's SDXL batches (``pixel_values``, ``input_ids`` (B, 2, 77) for both tokenizers, ``time_ids`` (B, 6)).

Only the framework's step is measured (bench/train_step.py also runs a bare PyTorch loop beside it for SD 1.x; for
SDXL that second copy of the step would only add time and memory here). The frozen weights are built directly in
``--weight-dtype`` (default bf16: the U-Net's 2.57 B parameters take 5.1 GB instead of 10.3 GB in fp32), so building
never holds an fp32 copy.

Examples::

    python bench/sdxl_step.py --resolution 128 --steps 2 --warmup 1                      # LoRA (lora_attn), CPU
    python bench/sdxl_step.py --resolution 128 --steps 2 --warmup 1 --grad-checkpointing --optim adamw8bit
    python bench/sdxl_step.py --resolution 1024 --precision bf16-mixed --steps 10 --warmup 3   # one GPU

Output: one human-readable line, then one JSON line (starts with ``{``); ``--out`` appends the JSON line.
``--model sdxl_tiny`` runs the same code on the tiny SDXL (tests/test_bench_sdxl.py).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from step_harness import (
    PeakMemory,
    _status_kb,
    clear_grads,
    device_name,
    framework_round,
    load_group,
    loadavg,
    summarize,
)

import lightning as L  # noqa: E402  (after step_harness, which puts the repository on sys.path)
import torch  # noqa: E402

from sdft.adapters.lora import setup_trainable  # noqa: E402
from sdft.models.quantize import quantize_models  # noqa: E402

from sdft.models.params import count_params  # noqa: E402
from sdft.config import AdapterConfig, Attention, LossConfig, ModelConfig, OptimConfig, WeightDtype  # noqa: E402
from sdft.families.sdxl import SdxlConditioning  # noqa: E402
from sdft.models.loading import DTYPES, freeze_models, make_noise_scheduler, speed_options  # noqa: E402
from sdft.training.module import DreamBoothModule, StepModels  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", choices=["sdxl", "sdxl_tiny"], default="sdxl", help="sdxl: SDXL base 1.0, random")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--adapter", choices=["lora_attn", "lora_attn_ff", "lora_all"], default="lora_attn")
    p.add_argument("--rank", type=int, default=None, help="LoRA rank (default: the adapter file's)")
    p.add_argument("--train-text-encoder", action="store_true", help="LoRA on both text towers too")
    p.add_argument("--precision", choices=["32-true", "bf16-mixed", "16-mixed"], default="32-true")
    p.add_argument("--weight-dtype", choices=[d.value for d in WeightDtype], default="bf16")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument(
        "--quantize",
        choices=["int8", "fp8"],
        default=None,
        help="frozen base quantized (model.quantize, optimum-quanto)",
    )
    p.add_argument("--optim", choices=["adamw", "adamw8bit"], default="adamw", help="conf/optim/<name>.yaml")
    p.add_argument("--grad-clip", type=float, default=1.0, help="trainer.gradient_clip_val; 0: off")
    p.add_argument("--steps", type=int, default=2, help="measured steps (after warm-up)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up steps, not measured (>= 1)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default="", help="free text stored in the JSON line")
    p.add_argument("--out", type=Path, default=None, help="append the JSON line to this file")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be >= 1")
    if args.resolution % 8:
        p.error("--resolution must be a multiple of 8")
    return args


def build_models(name: str, dtype: torch.dtype) -> SimpleNamespace:
    """U-Net, VAE, both towers (built in `dtype`: no fp32 copy of the 2.6 B U-Net) and SDXL's scheduler."""
    from diffusers import EulerDiscreteScheduler

    from sdft.models.sdxl_tiny import SDXL_SCHEDULER_CONFIG

    if name == "sdxl_tiny":
        from sdft.models.sdxl_tiny import build_sdxl_tiny_pipeline

        pipe = build_sdxl_tiny_pipeline()
        unet, vae, te1, te2 = pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2
    else:
        from sdft.models.sdxl_arch import build_sdxl_text_encoders, build_sdxl_unet, build_sdxl_vae

        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # parameters are created in `dtype` (init included)
        try:
            unet, vae = build_sdxl_unet(dtype), build_sdxl_vae(dtype)
            te1, te2 = build_sdxl_text_encoders(dtype)
        finally:
            torch.set_default_dtype(default)
    return SimpleNamespace(
        unet=unet,
        vae=vae,
        text_encoder=te1,
        text_encoder_2=te2,
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER_CONFIG),
    )


def make_batches(n: int, batch: int, resolution: int, vocab: int, seed: int) -> list[dict]:
    """What the SDXL DataModule yields: pixels, both towers' ids (B, 2, 77), per-sample time ids (B, 6)."""
    gen = torch.Generator().manual_seed(seed)
    ids = [float(resolution)] * 2 + [0.0, 0.0] + [float(resolution)] * 2  # uncropped, original = target
    return [
        {
            "pixel_values": torch.rand(batch, 3, resolution, resolution, generator=gen) * 2 - 1,
            "input_ids": torch.randint(0, vocab, (batch, 2, 77), generator=gen),
            "time_ids": torch.tensor([ids] * batch),
            "is_prior": torch.zeros(batch, dtype=torch.bool),
            "n_instance": batch,
        }
        for _ in range(n)
    ]


def main(argv=None) -> int:
    from train_step import quiet

    args = parse_args(argv)
    quiet()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    L.seed_everything(args.seed, workers=False, verbose=False)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    weight_dtype = WeightDtype(args.weight_dtype)
    holder = build_models(args.model, DTYPES[weight_dtype])
    adapter = load_group("adapter", args.adapter, AdapterConfig)
    if args.rank is not None:
        adapter.rank = args.rank
    adapter.train_text_encoder = args.train_text_encoder
    model_cfg = ModelConfig(
        path=args.model,
        weight_dtype=weight_dtype,
        attention=Attention.sdpa,
        gradient_checkpointing=args.grad_checkpointing,
    )
    freeze_models(holder, model_cfg)  # the framework's order (sdft.run.wiring.prepare): dtype, adapter, speed options
    quantize_models(holder, args.quantize)  # model.quantize, as prepare_models does
    setup_trainable(holder.unet, holder.text_encoder, adapter, holder.text_encoder_2)
    speed_options(holder, model_cfg)
    optim = load_group("optim", args.optim, OptimConfig)
    trainable = {name: count_params(getattr(holder, name))[0] for name in ("unet", "text_encoder", "text_encoder_2")}
    params = {
        name: sum(p.numel() for p in getattr(holder, name).parameters())
        for name in ("unet", "vae", "text_encoder", "text_encoder_2")
    }
    models = StepModels(
        holder.unet,
        holder.text_encoder,
        holder.vae,
        make_noise_scheduler(holder),
        text_encoder_2=holder.text_encoder_2,
        conditioning=SdxlConditioning(),
    )
    module = DreamBoothModule(
        models, optim, LossConfig(), prior_loss_weight=1.0, train_text_encoder=args.train_text_encoder
    )
    batches = make_batches(2, args.batch, args.resolution, holder.text_encoder.config.vocab_size, args.seed)
    build_s = time.perf_counter() - t0
    build_peak_rss_mb = _status_kb("VmHWM") / 1024

    load_before = loadavg()
    with PeakMemory(device) as mem:
        times, modes = framework_round(module, batches, args, device)
    clear_grads(holder.unet, holder.text_encoder, holder.text_encoder_2)
    run = summarize(times, args.warmup, args.steps, args.batch)
    result = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "label": args.label,
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out",)},
        "adapter_rank": adapter.rank,
        "parameters": params,
        "trainable_params": trainable,
        "framework_train_modes": modes,
        "build_s": round(build_s, 1),
        "build_peak_rss_mb": round(build_peak_rss_mb, 1),
        "loadavg_1min": {"before": load_before, "after": loadavg()},
        "torch_threads": torch.get_num_threads(),
        "framework": {**run, **mem.as_dict()},
        "command": "python bench/sdxl_step.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    print(human_line(result), flush=True)
    line = json.dumps(result)
    print(line, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as fh:
            fh.write(line + "\n")
    return 0


def human_line(r: dict) -> str:
    c, f = r["config"], r["framework"]
    mem = (
        f"peak {f['peak_alloc_gb']:.2f} GB alloc"
        if "peak_alloc_gb" in f
        else f"peak RSS {f['peak_rss_mb'] / 1024:.2f} GB"
    )
    return (
        f"{c['model']} {c['resolution']}px b{c['batch']} {c['adapter']} r{r['adapter_rank']} weights {c['weight_dtype']}"
        f" {c['precision']}{' gc' if c['grad_checkpointing'] else ''} {c['optim']}"
        f"{' +text towers' if c['train_text_encoder'] else ''} [{r['device_type']}] | {f['s_per_step']:.3g} s/step"
        f" ({f['img_s']:.3g} img/s), {mem}, cpu_util {f['cpu_util']} of {r['torch_threads']} threads"
        f" | build {r['build_s']} s, build peak RSS {r['build_peak_rss_mb'] / 1024:.2f} GB"
    )


if __name__ == "__main__":
    sys.exit(main())
