"""The printed plan and the one-line headline train.py logs."""

from __future__ import annotations

from sdft.run.plan.forecast import PhaseForecast
from sdft.run.plan.plan import Plan
from sdft.run.plan.trace import GiB


def _gb(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def duration(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def headline(plan: Plan) -> str:
    d = plan.device
    return (
        f"plan: {plan.steps} steps, peak memory {_gb(plan.peak)}, about {duration(plan.seconds)} of model arithmetic "
        f"on {d.name} ({'' if d.measured else 'assumed efficiency; '}per-step overhead not counted: it dominates "
        "small models)"
    )


def phase_lines(cfg, f: PhaseForecast) -> list[str]:
    d, s = f.data, f.step
    t = f.total_seconds(cfg)
    lines = [f"phase {f.name!r}"]
    lines.append("  data:")
    for name, c in d.concepts.items():
        lines.append(f"    concept {name}: {c['images']} images x {c['repeats']} repeats")
    lines.append("    buckets: " + ", ".join(f"{b} ({n})" for b, n in d.buckets.items()))
    lines.append(
        f"    steps {d.steps} x batch {d.batch_size}"
        + (f" x accumulation {d.accumulate}" if d.accumulate > 1 else "")
        + f" = {d.epochs:.1f} epochs; class images {d.class_images} ({d.class_to_generate} still to generate)"
    )
    lines.append("  parameters:")
    for name, p in s.params.items():
        lines.append(f"    {name}: {p['trainable']:,} trainable, {p['total'] - p['trainable']:,} frozen")
    lines.append("  files written:")
    for name, n in f.files.items():
        lines.append(f"    {name}: {_mb(n)}")
    cached = [n for n, on in zip(("latents", "text"), f.caches) if on]
    lines.append(
        f"  peak memory of a training step at {d.largest[0]}x{d.largest[1]} ({f.precision}"
        f"{', cached ' + ' + '.join(cached) if cached else ''}): {_gb(s.peak)}"
    )
    lines.append(
        f"    weights {_gb(s.weights)} | trainable + optimizer state {_gb(s.trainable)} | "
        f"activations {_gb(s.activations)} | workspace {_gb(s.workspace)}"
    )
    if f.device.heap_share:
        lines.append(
            f"    + freed tensors the C heap keeps resident (x{f.device.heap_share:.2f} of the activations and "
            f"workspace, measured on this CPU): {_gb(f.step_heap)} -> {_gb(f.step_peak)} of RSS"
        )
    n = f.generation.images
    lines.append(
        f"  peak memory while sampling ({n} image{'s' if n > 1 else ''} a call: grid rows, likeness meter): {_gb(f.grid_peak)}"
    )
    lines.append(
        f"  time on {f.device.name} ({f.device.peak_flops(f.precision) / 1e12:.2f} TFLOP/s peak x "
        f"{f.device.efficiency_for(f.precision):.0%} {'measured: ' + f.device.measured if f.device.measured else 'ASSUMED'}):"
    )
    optimizer = (
        f" + the optimizer step over {s.trained_elements / 1e6:,.1f} M trained values {duration(f.optimizer_seconds)}"
        if f.optimizer_seconds
        else ""
    )
    half = (
        f" ({s.half_flops / 1e9:.1f} of them on 16-bit inputs, at the half-precision rate)"
        if s.half_flops and not f.precision.startswith(("bf16", "16"))
        else ""
    )
    rate = f.device.weight_grad_efficiency
    wgrad = (
        f" ({s.weight_grad_flops / 1e9:.1f} of them convolution weight gradients, at {rate:.0%} of the peak)"
        if s.weight_grad_flops and rate and not f.precision.startswith(("bf16", "16"))
        else ""
    )
    lines.append(f"    {s.flops / 1e9:.1f} GFLOP a step{half}{wgrad}{optimizer} -> {duration(f.step_seconds)} a step")
    lines.append(
        f"    training {duration(t['train'])}, class images {duration(t['class_images'])}, "
        f"grids {duration(t['grids'])} ({f.grids} x {f.grid_images // max(f.grids, 1)} images), "
        f"likeness meter {duration(t['likeness'])}: total {duration(t['total'])}"
    )
    lines += [f"  note: {n}" for n in s.notes]
    return lines


def report(plan: Plan) -> str:
    lines = [f"model: {plan.arch.source} ({plan.arch.family.value}); device: {plan.device.name}"]
    for cfg, f in plan.phases:
        lines += phase_lines(cfg, f)
    lines.append(headline(plan))
    return "\n".join(lines)


def as_json(plan: Plan) -> dict:
    out = {
        "model": plan.arch.source,
        "device": plan.device.name,
        "steps": plan.steps,
        "peak_bytes": plan.peak,
        "seconds": plan.seconds,
        "phases": [],
    }
    for cfg, f in plan.phases:
        s = f.step
        out["phases"].append(
            {
                "name": f.name,
                "data": vars(f.data) | {"largest": list(f.data.largest)},
                "params": s.params,
                "files": f.files,
                "memory": {
                    "weights": s.weights,
                    "trainable_and_optimizer": s.trainable,
                    "activations": s.activations,
                    "workspace": s.workspace,
                    "step_peak": s.peak,
                    "step_heap": f.step_heap,  # the host's C heap on top (cpu)
                    "grid_peak": f.grid_peak,
                },
                "flops_per_step": s.flops,
                "half_flops_per_step": s.half_flops,
                "weight_grad_flops_per_step": s.weight_grad_flops,
                "seconds": f.total_seconds(cfg),
                "notes": s.notes,
            }
        )
    return out
