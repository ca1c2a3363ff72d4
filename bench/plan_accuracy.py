"""`sdft plan`'s forecast against a measured training step on this CPU (acceptance of issue 30).

Each case runs in its own process: the forecast (sdft/run/plan, fake tensors), then the same step on real tensors
(random weights of the architecture, built by sdft/run/plan/arch.py; the framework's DreamBoothModule step, the
configured optimizer with its state made): memory = peak RSS during the second step minus the RSS before it (VmHWM
reset through /proc/self/clear_refs), compared with the forecast peak minus what the forecast has resident before a
step (weights, trained parameters, optimizer state). Time: the second step's wall time against the forecast FLOPs /
(the CPU entry's peak x efficiency); the achieved FLOP/s as a share of the peak is printed too.

    python bench/plan_accuracy.py --case sd15-lora-256 [--case ...] [--precision fp32|bf16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASES = {
    "tiny-lora-64": ["data.resolution=64"],
    "sd15-lora-256": ["model=sd15", "data.resolution=256"],
    "sd15-lora-384": ["model=sd15", "data.resolution=384"],
    "sd15-full-256": ["model=sd15", "data.resolution=256", "adapter=full"],
    # SDXL's frozen weights in bf16 (7 GB instead of 14 GB in fp32: this machine is shared); trained LoRA in fp32
    "sdxl-lora-128": ["model=sdxl", "data.resolution=128", "model.weight_dtype=bf16"],
}
COMMON = ["trainer.max_steps=10", "callbacks.validation_seeds=[0]"]


def _kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return -1


def measure(case: str, precision: str) -> dict:
    import torch

    from sdft.run.plan.arch import build_models
    from sdft.run.plan.compose import compose_run, plan_run
    from sdft.run.plan.devices import cpu_device
    from sdft.run.plan.trace import adapted_module, freeze, make_batch, make_optimizer, precision_context

    overrides = CASES[case] + COMMON + (["trainer.precision=bf16-mixed"] if precision == "bf16" else [])
    t0 = time.perf_counter()
    plan = plan_run(compose_run(overrides), cpu_device())
    forecast_s = time.perf_counter() - t0
    cfg, f = plan.phases[0]
    models = build_models(plan.arch)  # on meta, adapted as the forecast did; then random weights on the CPU
    with torch.device("meta"):
        freeze(models, cfg)
        module, _ = adapted_module(cfg, models)
    module.to_empty(device="cpu")
    with torch.no_grad():  # normal_ is much faster than the modules' own initialisers for 1-3 B parameters
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_floating_point():
                t.normal_(0, 0.02)
        for name, b in module.named_buffers():
            if name.endswith("position_ids"):  # CLIP's token positions: the one integer buffer
                b.copy_(torch.arange(b.shape[-1]).expand_as(b))
    module.train()
    opt = make_optimizer(cfg, module, [])
    batch = make_batch(cfg, module, f.data.largest, *f.caches)
    times, rss = [], {}
    for i in range(2):
        if i == 1:
            import ctypes
            import gc

            gc.collect()
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            rss["before"] = _kb("VmRSS")
        start = time.perf_counter()
        with precision_context(cfg.trainer.precision):
            loss = module.training_step(batch, 0)
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        del loss
        times.append(time.perf_counter() - start)
    rss["peak"] = _kb("VmHWM")
    measured = rss["peak"] - rss["before"]
    forecast = f.step.peak - f.step.resident
    dev = cpu_device()
    peak = dev.peak_flops(cfg.trainer.precision)
    return {
        "case": case,
        "precision": precision,
        "overrides": overrides,
        "size": list(f.data.largest),
        "forecast_step_gib": forecast / 2**30,
        "measured_step_gib": measured / 2**30,
        "memory_error": forecast / measured - 1,
        "forecast_peak_gib": f.step.peak / 2**30,
        "rss_before_gib": rss["before"] / 2**30,
        "gflop_per_step": f.step.flops / 1e9,
        "step_seconds": times[1],
        "forecast_step_seconds": f.step_seconds,
        "time_error": f.step_seconds / times[1] - 1,
        "achieved_gflops": f.step.flops / times[1] / 1e9,
        "cpu_peak_gflops": peak / 1e9,
        "share_of_peak": f.step.flops / times[1] / peak,
        "forecast_seconds": forecast_s,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES), required=True)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--json", help="append the results (one JSON object a line) to this file")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(args.case[0], args.precision)))
        return
    for case in args.case:  # one process each: RSS figures of one case never include another's
        cmd = [sys.executable, __file__, "--one", "--case", case, "--precision", args.precision]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{case}: failed\n{out.stderr[-3000:]}")
            continue
        result = json.loads(line[7:])
        print(
            f"{case} {args.precision}: step memory forecast {result['forecast_step_gib']:.2f} GiB, measured "
            f"{result['measured_step_gib']:.2f} GiB ({result['memory_error']:+.0%}); step {result['step_seconds']:.1f} s, "
            f"forecast {result['forecast_step_seconds']:.1f} s ({result['time_error']:+.0%}); "
            f"{result['achieved_gflops']:.0f} GFLOP/s = {result['share_of_peak']:.0%} of {result['cpu_peak_gflops']:.0f}"
        )
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
