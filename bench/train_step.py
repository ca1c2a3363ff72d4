#!/usr/bin/env python
"""Training-step benchmark: the framework's step against a bare PyTorch loop, same model, same process.

Framework: ``sdft.training.module.DreamBoothModule`` driven by a real ``lightning.Trainer`` (``fit`` with ``max_steps``, no
logger, no checkpointing, no progress bar, no model summary; only a timing callback) on synthetic in-memory batches
shaped like the DataModule's (``pixel_values`` in [-1, 1], ``input_ids`` of length 77, ``is_prior``, ``n_instance``).
Bare: a plain loop doing the same math on the same modules: VAE encode, ``add_noise``, text encoder, U-Net, MSE,
backward, gradient clipping (when ``--grad-clip`` > 0, as the framework's default ``trainer.gradient_clip_val=1.0``),
AdamW step, LR-scheduler step, ``zero_grad``.

Throughput is steady state: images / second between the end of the last warm-up step and the end of the last step.
Peak memory: on CPU the process' peak RSS (``VmHWM`` from /proc/self/status, reset before each phase through
/proc/self/clear_refs after ``malloc_trim``); on CUDA ``torch.cuda.max_memory_allocated`` (and reserved).

Examples::

    python bench/train_step.py --model tiny --resolution 64 --batch 2 --steps 20
    python bench/train_step.py --model sd15 --resolution 256 --batch 1 --adapter lora_attn --steps 3 --warmup 1
    python bench/train_step.py --model sd15 --resolution 512 --precision bf16-mixed --rank 16 --out results.jsonl

Output: one human-readable line per config, then one JSON line (starts with ``{``); ``--out`` appends the JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import statistics
import sys
import warnings
from pathlib import Path

from step_harness import (
    PeakMemory,
    bare_round,
    build_setup,
    clear_grads,
    device_name,
    framework_round,
    loadavg,
    summarize,
)

import lightning as L  # noqa: E402  (after step_harness, which puts the repository on sys.path)
import torch  # noqa: E402

from sdft.config import WeightDtype  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--model",
        choices=["tiny", "sd15"],
        default="tiny",
        help="tiny: the offline tiny SD1-shaped model; sd15: SD 1.5 architecture, random weights",
    )
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument(
        "--adapter", choices=["lora_attn", "lora_attn_ff", "full"], default="lora_attn", help="conf/adapter/<name>.yaml"
    )
    p.add_argument("--rank", type=int, default=None, help="LoRA rank (default: the adapter file's)")
    p.add_argument("--freeze-text-encoder", action="store_true", help="LoRA on the U-Net only")
    p.add_argument("--precision", choices=["32-true", "bf16-mixed", "16-mixed"], default="32-true")
    p.add_argument(
        "--weight-dtype",
        choices=[d.value for d in WeightDtype],
        default="fp32",
        help="dtype of the frozen weights (model.weight_dtype)",
    )
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument(
        "--quantize",
        choices=["int8", "fp8"],
        default=None,
        help="frozen base quantized (model.quantize, optimum-quanto)",
    )
    p.add_argument("--optim", choices=["adamw", "adamw8bit"], default="adamw", help="conf/optim/<name>.yaml")
    p.add_argument("--attention", choices=["sdpa", "xformers"], default="sdpa")
    p.add_argument(
        "--grad-clip",
        type=float,
        default=1.0,
        help="gradient clipping in both loops (framework default trainer.gradient_clip_val=1.0); 0: off",
    )
    p.add_argument("--steps", type=int, default=10, help="measured steps (after warm-up)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps, not measured (>= 1)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="framework/bare pairs to run, alternating which goes first; figures are medians over rounds",
    )
    p.add_argument(
        "--retry-busy",
        type=int,
        default=0,
        help="CPU: run a round again (up to this many times) when other processes took the cores",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--compile", action="store_true", help="torch.compile the U-Net (nn.Module.compile, in place)")
    p.add_argument("--channels-last", action="store_true", help="U-Net and VAE in channels_last (model.channels_last)")
    p.add_argument(
        "--no-fused", action="store_true", help="AdamW without the fused CUDA kernel (optim.optimizer.fused=false)"
    )
    p.add_argument(
        "--cache-latents",
        action="store_true",
        help="batches of cached latent_dist + text states, computed here as the DataModule's cache "
        "computes them; the module's real cached path (no VAE encode, no text encoder)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--flops", choices=["auto", "on", "off"], default="auto", help="count FLOPs (auto: on CUDA)")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak TFLOP/s for MFU (default on CUDA: 989, H100/H200 dense bf16)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default="", help="free text stored in the JSON line")
    p.add_argument("--out", type=Path, default=None, help="append the JSON line to this file")
    p.add_argument("--verbose", action="store_true", help="keep Lightning's and the libraries' messages")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        p.error("--warmup, --steps and --rounds must be >= 1")
    return args


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in (
        "lightning",
        "lightning.pytorch",
        "lightning.fabric",
        "pytorch_lightning",
        "diffusers",
        "transformers",
        "peft",
        "torch._dynamo",
        "torch._inductor",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.suppress(Exception):
        import diffusers.utils.logging as dlog

        dlog.set_verbosity_error()


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.verbose:
        quiet()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    L.seed_everything(args.seed, workers=False, verbose=False)
    if args.threads:
        torch.set_num_threads(args.threads)

    s = build_setup(args, device)
    m, module, param_groups, batches, flops = s.m, s.module, s.param_groups, s.batches, s.flops
    notes, adapter, train_te, trainable, build_s = s.notes, s.adapter, s.train_te, s.trainable, s.build_s

    fw_runs, bare_runs, fw_mem, bare_mem = [], [], [], []
    load_before = loadavg()
    status = "ok"
    discarded = []
    modes = {}

    def run_framework():
        nonlocal modes
        with PeakMemory(device) as mem:
            times, modes = framework_round(module, batches, args, device)
        clear_grads(m.unet, m.text_encoder)
        return summarize(times, args.warmup, args.steps, args.batch), mem.as_dict()

    def run_bare():
        for model in (m.unet, m.vae, m.text_encoder):
            model.to(device)  # Lightning's teardown moves the module back to the CPU
        module.train()  # the modes the framework round trains in (see framework_round); they change what
        # gradient checkpointing and LoRA dropout do
        with PeakMemory(device) as mem:
            times = bare_round(m, param_groups, batches, args, device)
        clear_grads(m.unet, m.text_encoder)
        return summarize(times, args.warmup, args.steps, args.batch), mem.as_dict()

    while len(fw_runs) < args.rounds:
        if (len(fw_runs) + len(discarded)) % 2 == 0:  # alternate which goes first, against order effects
            (fw_run, fw_m), (bare_run, bare_m) = run_framework(), run_bare()
        else:
            (bare_run, bare_m), (fw_run, fw_m) = run_bare(), run_framework()
        busy = device.type == "cpu" and min(fw_run["cpu_util"], bare_run["cpu_util"]) < 0.85 * torch.get_num_threads()
        if busy and len(discarded) < args.retry_busy:
            discarded.append({"framework": fw_run, "bare": bare_run})
            print(
                f"  round discarded, other processes took the cores (cpu_util {fw_run['cpu_util']}/"
                f"{bare_run['cpu_util']} of {torch.get_num_threads()} threads); again",
                flush=True,
            )
            continue
        fw_runs.append(fw_run)
        fw_mem.append(fw_m)
        bare_runs.append(bare_run)
        bare_mem.append(bare_m)

    fw = _median_run(fw_runs)
    bare = _median_run(bare_runs)
    ratios = [f["img_s"] / b["img_s"] for f, b in zip(fw_runs, bare_runs)]
    result = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "status": status,
        "label": args.label,
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("out", "verbose", "label", "retry_busy")
        },
        "adapter_rank": adapter.rank if adapter.kind.value == "lora" else None,
        "train_text_encoder": train_te,
        "trainable_params": trainable,
        "notes": notes,
        "framework_train_modes": modes,
        "discarded_busy_rounds": discarded,
        "build_s": round(build_s, 1),
        "loadavg_1min": {"before": load_before, "after": loadavg()},
        "torch_threads": torch.get_num_threads(),
        "framework": dict(fw, **_max_mem(fw_mem), rounds=fw_runs) if fw else None,
        "bare": dict(bare, **_max_mem(bare_mem), rounds=bare_runs) if bare else None,
        "ratio_framework_over_bare_throughput": round(statistics.median(ratios), 4) if ratios else None,
        "command": "python bench/train_step.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    if fw and bare:
        key = "peak_alloc_gb" if device.type == "cuda" else "peak_rss_mb"
        result["ratio_framework_over_bare_peak_memory"] = round(result["framework"][key] / result["bare"][key], 4)
    if flops is not None:
        result["flops_per_image"] = flops
        peak = args.peak_tflops if args.peak_tflops is not None else (989.0 if device.type == "cuda" else None)
        if peak and fw and bare:
            result["peak_tflops"] = peak
            result["mfu_framework"] = round(flops * fw["img_s"] / (peak * 1e12), 4)
            result["mfu_bare"] = round(flops * bare["img_s"] / (peak * 1e12), 4)

    print(human_line(result), flush=True)
    line = json.dumps(result, sort_keys=False)
    print(line, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as fh:
            fh.write(line + "\n")
    return 3 if status == "oom" else 0


def _median_run(runs: list[dict]) -> dict | None:
    if not runs:
        return None
    return {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}


def _max_mem(mems: list[dict]) -> dict:
    out = {}
    for k in mems[0]:
        vals = [mm[k] for mm in mems]
        out[k] = max(vals) if not isinstance(vals[0], bool) else all(vals)
    return out


def human_line(r: dict) -> str:
    c = r["config"]
    rank = f" r{r['adapter_rank']}" if r["adapter_rank"] else ""
    head = (
        f"{c['model']} {c['resolution']}px b{c['batch']} {c['adapter']}{rank} {c['precision']}"
        f"{' gc' if c['grad_checkpointing'] else ''} {c['optim']} {c['attention']}"
        f"{' compile' if c['compile'] else ''}{' channels-last' if c.get('channels_last') else ''}"
        f"{' no-fused' if c.get('no_fused') else ''}{' cache-latents' if c['cache_latents'] else ''}"
        f" [{r['device_type']}]"
    )

    def part(name: str, d: dict) -> str:
        mem = (
            f"peak {d['peak_alloc_gb']:.2f} GB alloc"
            if "peak_alloc_gb" in d
            else f"peak RSS {d['peak_rss_mb'] / 1024:.2f} GB"
        )
        return f"{name} {d['img_s']:.3g} img/s ({d['s_per_step']:.3g} s/step), {mem}"

    parts = [
        head,
        part("framework", r["framework"]),
        part("bare", r["bare"]),
        f"framework/bare throughput {r['ratio_framework_over_bare_throughput']:.3f}"
        f", peak memory {r['ratio_framework_over_bare_peak_memory']:.3f}",
    ]
    if "flops_per_image" in r:
        extra = f"{r['flops_per_image'] / 1e9:.1f} GFLOP/img (fwd+bwd)"
        if "mfu_framework" in r:
            extra += (
                f", MFU framework {100 * r['mfu_framework']:.1f}% bare {100 * r['mfu_bare']:.1f}%"
                f" of {r['peak_tflops']:g} TFLOP/s"
            )
        parts.append(extra)
    if r["device_type"] == "cpu":
        util = min(r["framework"]["cpu_util"], r["bare"]["cpu_util"])
        if util < 0.85 * r["torch_threads"]:
            parts.append(
                f"WARNING cpu_util {r['framework']['cpu_util']}/{r['bare']['cpu_util']} of "
                f"{r['torch_threads']} threads: other processes took the cores, repeat"
            )
    if r["notes"]:
        parts.append("; ".join(r["notes"]))
    return " | ".join(parts)


def guarded_main(argv=None) -> int:
    """main(), with CUDA out-of-memory anywhere (model build, caching, FLOP count) reported as a JSON line, exit 3."""
    try:
        return main(argv)
    except torch.cuda.OutOfMemoryError as err:
        args = parse_args(argv)
        line = json.dumps(
            {
                "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "status": "oom",
                "config": {
                    k: (str(v) if isinstance(v, Path) else v)
                    for k, v in vars(args).items()
                    if k not in ("out", "verbose", "label")
                },
                "error": str(err).splitlines()[0],
            }
        )
        print(f"{args.model} {args.resolution}px b{args.batch} {args.adapter} {args.precision} | OUT OF MEMORY")
        print(line)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(line + "\n")
        return 3


if __name__ == "__main__":
    sys.exit(guarded_main())
