"""The device table: peak FLOP/s, memory and the share of the peak a diffusion training step reaches.

GPU entries are the vendors' dense peaks (no sparsity) and an ASSUMED efficiency, until bench/run_gpu_suite.sh
measures one (then `measured` names the benchmark). The `cpu` entry is this machine's, worked out when asked:
cores x clock x FP32 FLOP per cycle per core (2 FMA units x SIMD lanes x 2: AVX-512 64, AVX2+FMA 32, else 8; AMX
bf16 1024), read from /proc/cpuinfo; its efficiency is measured by bench/plan_accuracy.py (one thread, per CPU second:
docs/benchmarks.md).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sdft.errors import ConfigError


@dataclass(frozen=True)
class Device:
    name: str
    fp32_tflops: float  # dense, no TF32 (PyTorch's default for matmuls)
    half_tflops: float  # bf16 / fp16 with fp32 accumulation, dense
    memory_gib: float
    efficiency: float  # share of the peak a training step reaches
    measured: str | None = None  # the benchmark that measured `efficiency`; None: assumed
    bf16: bool = True
    # host memory a step's freed tensors keep resident in the C heap, as a share of the step's transient tensors
    # (activations + workspace; cpu only: a GPU's figure is its caching allocator's, which the trace models)
    heap_share: float = 0.0
    half_efficiency: float | None = None  # share of the half-precision peak, where measured apart (None: `efficiency`)
    # the optimizer step's time, which FLOPs do not show (element-wise, bound by memory traffic): seconds per trained
    # element and per trained tensor (cpu only, measured; on a GPU the fused step is a few ms: not counted)
    optimizer_s_per_element: float = 0.0
    optimizer_s_per_tensor: float = 0.0
    # share of the peak that convolutions' weight gradients reach, where measured apart (None: `efficiency`, which
    # LoRA steps measure: their convolutions are frozen, so they never run that kernel; a full fine-tune does)
    weight_grad_efficiency: float | None = None

    def optimizer_seconds(self, tensors: int, elements: int) -> float:
        return tensors * self.optimizer_s_per_tensor + elements * self.optimizer_s_per_element

    def peak_flops(self, precision: str) -> float:
        half = precision.startswith(("bf16", "16"))
        return (self.half_tflops if half else self.fp32_tflops) * 1e12

    def efficiency_for(self, precision: str) -> float:
        half = precision.startswith(("bf16", "16"))
        return self.half_efficiency if half and self.half_efficiency is not None else self.efficiency


ASSUMED_GPU_EFFICIENCY = 0.35  # typical of a U-Net step in eager PyTorch; replaced by measured values

GPUS = {
    "h100": Device("h100", 67.0, 989.0, 80, ASSUMED_GPU_EFFICIENCY),
    "h200": Device("h200", 67.0, 989.0, 141, ASSUMED_GPU_EFFICIENCY),
    "a100": Device("a100", 19.5, 312.0, 80, ASSUMED_GPU_EFFICIENCY),
    "a100-40gb": Device("a100-40gb", 19.5, 312.0, 40, ASSUMED_GPU_EFFICIENCY),
    "l4": Device("l4", 30.3, 121.0, 24, ASSUMED_GPU_EFFICIENCY),
    "4090": Device("4090", 82.6, 165.2, 24, ASSUMED_GPU_EFFICIENCY),
    "3090": Device("3090", 35.6, 71.0, 24, ASSUMED_GPU_EFFICIENCY),
    "3060": Device("3060", 12.7, 25.4, 12, ASSUMED_GPU_EFFICIENCY),
    "t4": Device("t4", 8.1, 65.0, 15, ASSUMED_GPU_EFFICIENCY, bf16=False),
}

# Measured (bench/plan_accuracy.py --threads 1, docs/benchmarks.md): SD 1.5 LoRA fp32 eager steps ran 97 and 126
# GFLOP per CPU second on one thread at 256² and 384², 58 % and 76 % of one core's FMA peak; this is their mean.
# Per CPU second, because other agents' work shared the cores; the second core was busy, so the entry's 2-core peak
# assumes the cores scale: measured on the idle machine (bench/results/plan_accuracy_two_cores_idle.jsonl), two
# threads ran the steps 1.81x (256²) and 1.86x (384²) faster than one, and the 2-core forecast of the wall time was
# -17 % and +0 %. model.compile=true was slower on this CPU (49 % at 256²).
CPU_EFFICIENCY = 0.67
# bf16-mixed (autocast) SD 1.5 LoRA 256², one thread: 156 GFLOP per CPU second, 5.9 % of one core's AMX bf16 peak
# (2.6 GHz x 1024); one case, measured the same way
CPU_HALF_EFFICIENCY = 0.059
CPU_MEASURED: str | None = (
    "bench/plan_accuracy.py, SD 1.5 LoRA fp32 256-384 / bf16 256, one thread per CPU second; two cores scale 1.8x (measured idle)"
)
# glibc's malloc keeps a step's freed tensors resident: after the first large free its mmap threshold rises (up to
# 32 MiB), so the step's tensors come from the heap, whose freed blocks stay in the process, fragmented, reused only
# where they fit. Measured (bench/plan_accuracy.py --explain, one thread; docs/benchmarks.md): the RSS growth of a
# step over PyTorch's allocator peak, as a share of the step's transient tensors (activations + workspace), is 0.72
# (SD 1.5 LoRA 256), 0.53 (SD 1.5 LoRA 384), 0.33 (SDXL LoRA 128, bf16 weights); 0.54 for SD 1.5 256 bf16-mixed
# (checked after this rule was set). This is the fp32 cases' mean, an average over two architectures, not a model of
# the heap. With MALLOC_MMAP_THRESHOLD_=131072 (every tensor mmapped and returned on free) the RSS growth is the
# allocator peak (1.00x, 1.00x, 1.08x) and the term is 0.
CPU_HEAP_SHARE = 0.52
# torch AdamW's step (the single-tensor path the CPU takes), one thread, CPU seconds (bench/optimizer_step_cost.py,
# docs/benchmarks.md): per trained element over 20 tensors of 4.9 M elements 5.43 and 4.11 ns in two runs (memory
# traffic, so the load beside it moves it), per tensor over 2000 LoRA-sized ones 18.3 and 19.8 us; their means. A full
# fine-tune of SD 1.5's U-Net (860 M elements) spends ~4 s of a core on it, FLOPs ~0. Per core: the entry divides by
# the cores, as its FLOP peak assumes they scale (1.8x on two, measured for the FLOPs, not for this step).
CPU_OPTIMIZER_S_PER_ELEMENT = 4.77e-9
CPU_OPTIMIZER_S_PER_TENSOR = 19.1e-6
# Convolution weight gradients, fp32, one thread (bench/plan_accuracy.py --op-times, docs/benchmarks.md): the SD 1.5
# full fine-tune at 256² spent 7.19 CPU s in convolution_backward (input and weight gradients), the LoRA step of the
# same shape 2.07 s (input gradients only), so the weight gradients' 222 GFLOP took 5.12 s: 43 GFLOP/s, 0.26 of a
# core's peak, against 0.67 for the rest of the step. (Alone, outside a step, bench/conv_grad_cost.py times that
# kernel at 0.375 and the forward at 0.62; the figure used is the one inside the step.) One case, 2 CPU cores shared.
CPU_WEIGHT_GRAD_EFFICIENCY = 0.26


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flops_per_cycle(flags: set[str]) -> tuple[int, int]:
    """(fp32, bf16) FLOP per cycle per core: 2 FMA units x SIMD lanes x 2 FLOP."""
    fp32 = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    bf16 = 1024 if "amx_bf16" in flags else 128 if "avx512_bf16" in flags else fp32
    return fp32, bf16


def cpu_core() -> tuple[set[str], float]:
    """(flags, nominal GHz) of this machine's cores, from /proc/cpuinfo (2.5 GHz where it does not say)."""
    info = _cpuinfo()
    flags = set(re.search(r"^flags\s*:(.*)$", info, re.M).group(1).split()) if "flags" in info else set()
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)
    return flags, float(mhz.group(1)) / 1000 if mhz else 2.5


def cpu_device(cores: int | None = None) -> Device:
    """This machine's CPU: the cores this process may use (or `cores`) x clock x FLOP per cycle, and its RAM."""
    flags, ghz = cpu_core()
    cores = cores or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    fp32, bf16 = cpu_flops_per_cycle(flags)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 16
    return Device(
        "cpu",
        cores * ghz * fp32 / 1e3,
        cores * ghz * bf16 / 1e3,
        mem,
        CPU_EFFICIENCY,
        CPU_MEASURED,
        bf16="avx512_bf16" in flags or "amx_bf16" in flags,
        heap_share=0.0 if _mmap_threshold_fixed() else CPU_HEAP_SHARE,
        half_efficiency=CPU_HALF_EFFICIENCY,
        optimizer_s_per_element=CPU_OPTIMIZER_S_PER_ELEMENT / cores,
        optimizer_s_per_tensor=CPU_OPTIMIZER_S_PER_TENSOR / cores,
        weight_grad_efficiency=CPU_WEIGHT_GRAD_EFFICIENCY,
    )


def _mmap_threshold_fixed() -> bool:
    """MALLOC_MMAP_THRESHOLD_ set (glibc's dynamic threshold off): freed tensors go back to the system at once."""
    return bool(os.environ.get("MALLOC_MMAP_THRESHOLD_"))


def device(name: str) -> Device:
    key = name.lower()
    if key == "cpu":
        return cpu_device()
    if key in GPUS:
        return GPUS[key]
    raise ConfigError(f"Unknown device {name!r}: use one of {', '.join(['cpu', *GPUS])}.")


def budget_gib(spec: str) -> tuple[float, str]:
    """`--fit 8GB` / `--fit 7.5GiB` / `--fit t4`: (GiB, label). GB is read as GiB, as GPU memory is sold."""
    m = re.fullmatch(r"\s*([\d.]+)\s*(gib|gb|g|mib|mb|m)?\s*", spec.lower())
    if m:
        value = float(m.group(1))
        return (value / 1024 if (m.group(2) or "gb").startswith("m") else value), spec
    if spec.lower() in GPUS or spec.lower() == "cpu":
        d = device(spec)
        return d.memory_gib, f"{d.name} ({d.memory_gib:g} GiB)"
    raise ConfigError(f"--fit {spec!r}: give a memory size (8GB, 7.5GiB, 12000MB) or a device ({', '.join(GPUS)}).")
