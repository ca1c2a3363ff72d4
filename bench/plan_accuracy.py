"""`sdft plan`'s forecast against a measured training step on this CPU (acceptance of issue 30).

Each case runs in its own process: the forecast (sdft/run/plan, fake tensors), then the same step on real tensors
(random weights of the architecture, built by sdft/run/plan/arch.py; the framework's DreamBoothModule step, the
configured optimizer with its state made): memory = peak RSS during the second step minus the RSS before it (VmHWM
reset through /proc/self/clear_refs), compared with the forecast peak minus what the forecast has resident before a
step (weights, trained parameters, optimizer state). Time: the second step's wall time against the forecast FLOPs /
(the CPU entry's peak x efficiency); the achieved FLOP/s as a share of the peak is printed too (and of the peak of
the cores the step's threads use: `--threads 1` against one core's peak, the fair figure when other work holds the
other cores).

Where a gap between forecast and RSS comes from (`--explain`, two more steps): the same step on real tensors under the
forecast's own tracker (sdft/run/plan/tracker.py: operator outputs, as the fake trace counts them), and under
torch.profiler's memory profile (every allocation through PyTorch's CPU allocator, kernels' internal buffers too).
Tracker = forecast: the trace is right about the tensors; profiler > tracker: kernel-internal buffers; RSS > profiler:
memory outside PyTorch's allocator (oneDNN's own buffers, the C heap's high-water mark). The step's CPU seconds in
the kernel and its page faults are reported beside its time (fresh blocks over 32 MiB faulted in: docs/benchmarks.md).

`--grid`: after the steps, the run's largest sampling call as the forecast traces it (the likeness meter's batch or a
grid row), twice: RSS growth against the forecast's sampling peak. `--set KEY=VALUE` adds an override to every case
(`--set callbacks.validation_steps=3`: the sampling memory does not depend on the steps).

    python bench/plan_accuracy.py --case sd15-lora-256 [--case ...] [--precision fp32|bf16] [--threads N]
        [--explain] [--op-times] [--grid] [--set KEY=VALUE] [--no-mkldnn] [--compile] [--json out.json]
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
    "sd15-full-320": ["model=sd15", "data.resolution=320", "adapter=full"],
    # SDXL's frozen weights in bf16 (7 GB instead of 14 GB in fp32: this machine is shared); trained LoRA in fp32
    "sdxl-lora-128": ["model=sdxl", "data.resolution=128", "model.weight_dtype=bf16"],
    "sdxl-lora-128-fp32": ["model=sdxl", "data.resolution=128"],  # 14 GB of fp32 weights: a machine with ~20 GB free
}
COMMON = ["trainer.max_steps=10", "callbacks.validation_seeds=[0]"]


def _kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return -1


def tracked_step(step, module, opt) -> tuple[int, dict]:
    """The step on real tensors under the forecast's tracker: its peak over what was resident, and the split."""
    from sdft.run.plan.tracker import LiveBytes

    live = LiveBytes()
    live.track_module(module)
    if opt is not None:
        live.track_optimizer(opt)
    resident = sum(live.live.values())
    with live:
        step()
    return live.peak - resident, live.at_peak


def profiled_step(step) -> int:
    """Peak bytes allocated through PyTorch's CPU allocator during the step, over what was allocated at its start
    (torch.profiler's memory records: every allocation and free, in time order)."""
    import itertools

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    records = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    return max(itertools.accumulate((n for _, n in records), initial=0))


OP_GROUPS = (  # operator name prefix -> the group the per-operator CPU times are summed into (--op-times)
    ("aten::convolution_backward", "convolution backward (input and weight gradients)"),
    ("aten::mkldnn_convolution", "convolution forward"),
    ("aten::_convolution", "convolution forward"),
    ("aten::addmm", "matmul"),
    ("aten::mm", "matmul"),
    ("aten::bmm", "matmul"),
    ("aten::_scaled_dot_product", "attention"),
)


def op_times(step) -> dict:
    """Self CPU seconds of the step's operators under torch.profiler, summed by OP_GROUPS (the rest: "other", which
    includes the optimizer's element-wise operators), the optimizer step's total apart, and the ten largest
    operators: where a step's time goes, which the FLOP count alone does not say."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    groups: dict[str, float] = {}
    for e in events:
        group = next((g for prefix, g in OP_GROUPS if e.key.startswith(prefix)), "other")
        groups[group] = groups.get(group, 0.0) + e.self_cpu_time_total / 1e6
    optimizer = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step")) / 1e6
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]
    return {
        "op_groups_cpu_s": {k: round(v, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "optimizer_step_cpu_s": round(optimizer, 3),
        "op_top_self_cpu_s": {e.key: round(e.self_cpu_time_total / 1e6, 3) for e in top},
    }


def grid_memory(cfg, f, module) -> dict:
    """The run's largest sampling call, as the forecast traces it (f.generation.images images: the likeness meter's
    batch by default, else a grid row), rendered by the ValidationGrid callback's sampler (its pipeline over the
    trained module, classifier-free guidance, one decode at a time) after the training steps, their state resident:
    peak RSS over the RSS before it, against the forecast's sampling peak over what it has resident. A placeholder
    tokenizer (no files offline; the token ids do not change the memory), the config's sampler steps."""
    import tempfile
    from types import SimpleNamespace

    from diffusers import DDIMScheduler

    from sdft.callbacks.pipeline_parts import PipelineParts
    from sdft.callbacks.validation_grid import ValidationGrid
    from sdft.memory import trim_heap
    from sdft.models.tokenizer_vocab import build_clip_tokenizer

    module.to("cpu")  # already there (to_empty); Lightning's `module.device`, which the grid reads, was still meta
    tokenizer = build_clip_tokenizer()
    two = tokenizer if getattr(module, "text_encoder_2", None) is not None else None
    parts = PipelineParts(tokenizer, DDIMScheduler(), two, cfg.model.clip_skip)
    cb = SimpleNamespace(**cfg.callbacks)
    with tempfile.TemporaryDirectory() as tmp:
        grid = ValidationGrid(Path(tmp), [], cb, cfg.data.resolution, parts)
        images = f.generation.images
        growth, seconds = [], []
        for _ in range(2):  # a run samples again and again: the first call after the steps and the next one
            trim_heap()  # as ValidationGrid.write does before rendering
            Path("/proc/self/clear_refs").write_text("5")
            before = _kb("VmRSS")
            start = time.process_time()
            grid.sample_pairs(module, ["a photo of a dog"] * images, list(range(images)))
            seconds.append(time.process_time() - start)
            growth.append(_kb("VmHWM") - before)
    measured = max(growth)
    forecast_tensors = f.generation.peak - f.step.resident
    forecast = f.grid_peak - f.step.resident  # with the cpu entry's heap term
    return {
        "grid_size": cb.validation_resolution or cfg.data.resolution,
        "grid_images_per_call": images,
        "grid_rss_before_gib": before / 2**30,
        "grid_measured_gib": measured / 2**30,
        "grid_measured_each_gib": [g / 2**30 for g in growth],
        "grid_forecast_tensors_gib": forecast_tensors / 2**30,
        "grid_forecast_gib": forecast / 2**30,
        "grid_error": forecast / measured - 1,
        "grid_steps": cb.validation_steps,
        "grid_cpu_seconds": seconds,
        # the forecast on the cpu entry's cores, as one core's seconds (the call ran on one thread)
        "grid_forecast_cpu_seconds": f.generation_seconds(images, cb.validation_steps) * len(os.sched_getaffinity(0)),
    }


def measure(
    case: str,
    precision: str,
    threads: int | None,
    explain: bool,
    mkldnn: bool,
    compile: bool,
    ops: bool = False,
    grid: bool = False,
    extra_overrides: list[str] | None = None,
) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = mkldnn

    from sdft.run.plan.arch import build_models
    from sdft.run.plan.compose import compose_run, plan_run
    from sdft.run.plan.devices import cpu_device
    from sdft.run.plan.trace import adapted_module, freeze, make_batch, make_optimizer, precision_context

    overrides = CASES[case] + COMMON + (["trainer.precision=bf16-mixed"] if precision == "bf16" else [])
    overrides += extra_overrides or []
    overrides += ["model.compile=true"] if compile else []
    t0 = time.perf_counter()
    plan = plan_run(compose_run(overrides), cpu_device(threads))  # the forecast for the threads the step runs
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
    if cfg.model.compile:  # as sdft/run/wiring.py: in place, after the adapters; the first step compiles
        module.unet.compile()
    opt = make_optimizer(cfg, module, [])
    latents_cached, text_cached = f.caches
    batch = make_batch(cfg, module, f.data.largest, text_cached=text_cached, latents_cached=latents_cached)

    def step():
        with precision_context(cfg.trainer.precision):
            loss = module.training_step(batch, 0)
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    import resource

    times, cpu, sys_s, faults, rss = [], [], [], [], {}
    for i in range(2):
        if i == 1:
            import ctypes
            import gc

            gc.collect()
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            rss["before"] = _kb("VmRSS")
        start, cpu_start, sys_start = time.perf_counter(), time.process_time(), os.times().system
        faults_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
        sys_s.append(os.times().system - sys_start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_start)
    rss["peak"] = _kb("VmHWM")
    measured = rss["peak"] - rss["before"]
    forecast = f.step.peak - f.step.resident
    extra = {}
    if explain:
        tracked, split = tracked_step(step, module, opt)
        extra = {
            "tracker_real_step_gib": tracked / 2**30,
            "tracker_real_split_gib": {k: v / 2**30 for k, v in split.items()},
            "forecast_split_gib": {
                "weights": f.step.weights / 2**30,
                "trainable": f.step.trainable / 2**30,
                "activations": f.step.activations / 2**30,
                "workspace": f.step.workspace / 2**30,
            },
            "allocator_step_gib": profiled_step(step) / 2**30,
        }
    if ops:
        extra.update(op_times(step))
    if grid:
        extra.update(grid_memory(cfg, f, module))
    dev = cpu_device()
    peak = dev.peak_flops(cfg.trainer.precision)
    used = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    return {
        **extra,
        "mkldnn": mkldnn,
        "compile": bool(cfg.model.compile),
        "first_step_seconds": times[0],
        "case": case,
        "precision": precision,
        "overrides": overrides,
        "size": list(f.data.largest),
        "forecast_step_gib": forecast / 2**30,
        "measured_step_gib": measured / 2**30,
        "memory_error": forecast / measured - 1,
        # with the `cpu` entry's C-heap term (devices.py; 0 when MALLOC_MMAP_THRESHOLD_ is set)
        "forecast_rss_step_gib": (f.step_peak - f.step.resident) / 2**30,
        "rss_error": (f.step_peak - f.step.resident) / measured - 1,
        "forecast_peak_gib": f.step.peak / 2**30,
        "rss_before_gib": rss["before"] / 2**30,
        "gflop_per_step": f.step.flops / 1e9,
        "step_seconds": times[1],
        # CPU seconds the step's threads ran: under contention the fair figure (what the step got of the cores)
        "step_cpu_seconds": cpu[1],
        # of them in the kernel (page faults of fresh allocations, mostly: the heap handing memory back and taking it)
        "step_sys_seconds": sys_s[1],
        "step_minor_faults": faults[1],
        "achieved_gflops_per_cpu_second": f.step.flops / cpu[1] / 1e9,
        "share_of_core_peak_per_cpu_second": f.step.flops / cpu[1] / (peak / cores),
        "forecast_step_seconds": f.step_seconds,
        "forecast_optimizer_seconds": f.optimizer_seconds,
        "time_error": f.step_seconds / times[1] - 1,
        "cpu_time_error": f.step_seconds / cpu[1] - 1,  # against the CPU seconds (one thread: its fair figure)
        "achieved_gflops": f.step.flops / times[1] / 1e9,
        "cpu_peak_gflops": peak / 1e9,
        "share_of_peak": f.step.flops / times[1] / peak,
        "share_of_threads_peak": f.step.flops / times[1] / (peak * min(used, cores) / cores),
        "forecast_seconds": forecast_s,
        "torch_threads": used,
        "cores": cores,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES), required=True)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, help="torch threads of the step (default: torch's, one per core)")
    ap.add_argument("--explain", action="store_true", help="two more steps: real-tensor tracker, allocator profile")
    ap.add_argument("--op-times", action="store_true", help="one more step under torch.profiler: CPU s by operator")
    ap.add_argument(
        "--grid", action="store_true", help="then one validation-grid image: its memory against the forecast"
    )
    ap.add_argument("--set", action="append", default=[], help="another override for every case (KEY=VALUE)")
    ap.add_argument("--no-mkldnn", action="store_true", help="torch.backends.mkldnn.enabled = False")
    ap.add_argument("--compile", action="store_true", help="model.compile=true (the first step compiles)")
    ap.add_argument("--json", help="append the results (one JSON object a line) to this file")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.one:
        result = measure(
            args.case[0],
            args.precision,
            args.threads,
            args.explain,
            not args.no_mkldnn,
            args.compile,
            args.op_times,
            args.grid,
            args.set,
        )
        print("RESULT " + json.dumps(result))
        return
    for case in args.case:  # one process each: RSS figures of one case never include another's
        cmd = [sys.executable, __file__, "--one", "--case", case, "--precision", args.precision]
        cmd += [f"--threads={args.threads}"] if args.threads else []
        cmd += [flag for flag, on in (("--explain", args.explain), ("--no-mkldnn", args.no_mkldnn)) if on]
        cmd += ["--compile"] if args.compile else []
        cmd += ["--op-times"] if args.op_times else []
        cmd += ["--grid"] if args.grid else []
        cmd += [f"--set={o}" for o in args.set]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{case}: failed\n{out.stderr[-3000:]}")
            continue
        result = json.loads(line[7:])
        print(
            f"{case} {args.precision}: step memory forecast {result['forecast_step_gib']:.2f} GiB, measured "
            f"{result['measured_step_gib']:.2f} GiB ({result['memory_error']:+.0%}; with the C heap term "
            f"{result['forecast_rss_step_gib']:.2f} GiB, {result['rss_error']:+.0%}); step {result['step_seconds']:.1f} s, "
            f"forecast {result['forecast_step_seconds']:.1f} s ({result['time_error']:+.0%}; of the CPU s "
            f"{result['cpu_time_error']:+.0%}); "
            f"{result['achieved_gflops']:.0f} GFLOP/s = {result['share_of_peak']:.0%} of {result['cpu_peak_gflops']:.0f} "
            f"({result['share_of_threads_peak']:.0%} of {result['torch_threads']} of {result['cores']} cores' peak); "
            f"{result['step_cpu_seconds']:.1f} CPU s ({result['step_sys_seconds']:.1f} in the kernel, {result['step_minor_faults']} page faults): {result['achieved_gflops_per_cpu_second']:.0f} GFLOP per CPU "
            f"second = {result['share_of_core_peak_per_cpu_second']:.0%} of one core's peak"
        )
        if "tracker_real_step_gib" in result:
            print(
                f"  real-tensor tracker {result['tracker_real_step_gib']:.3f} GiB, PyTorch allocator "
                f"{result['allocator_step_gib']:.3f} GiB, RSS {result['measured_step_gib']:.3f} GiB"
            )
        if "op_groups_cpu_s" in result:
            print("  CPU s by operator group: " + json.dumps(result["op_groups_cpu_s"]))
        if "grid_measured_gib" in result:
            print(
                f"  sampling {result['grid_images_per_call']} images at {result['grid_size']}²: RSS growth {result['grid_measured_gib']:.3f} GiB, forecast "
                f"{result['grid_forecast_gib']:.3f} GiB ({result['grid_error']:+.0%}; tensors alone "
                f"{result['grid_forecast_tensors_gib']:.3f} GiB)"
            )
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
