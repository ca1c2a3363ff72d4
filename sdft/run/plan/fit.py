"""`--fit BUDGET`: the cheapest overrides that bring the forecast peak under a memory budget.

Tried in order of what they cost in speed or quality, each kept (cumulatively) only when it lowers the peak:
where sampling sets the peak, a smaller likeness-meter batch (its samples in more calls; nothing else changes),
caches (none), 8-bit Adam (little), gradient checkpointing (~20-90 % slower steps), half-precision frozen weights,
a smaller batch made up by gradient accumulation (slower steps, same effective batch), then a lower resolution
(changes what is learnt). Attention slicing is not offered: training has no such option (diffusers' slicing is for
sampling), and SDPA's kernels already avoid the full attention matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdft.config import AdapterKind, WeightDtype
from sdft.errors import ConfigError
from sdft.run.plan.devices import Device
from sdft.run.plan.trace import GiB
from sdft.training.optimizers import ADAMW, optimizer_node


@dataclass
class FitResult:
    overrides: list[str]
    peak: int
    budget_gib: float
    tried: list[tuple[str, int]]  # (overrides added, peak after)


def meter_candidate(cfg) -> list[str] | None:
    """A likeness-meter batch no larger than a grid row, where the meter's batch is larger: tried whenever sampling,
    not a training step, sets the peak (its samples then take more calls; nothing else changes)."""
    lk, row = cfg.callbacks.likeness, max(1, len(cfg.callbacks.validation_seeds))
    return [f"callbacks.likeness.batch_size={row}"] if lk.enabled and lk.batch_size > row else None


def candidates(cfg, device: Device) -> list[list[str]]:
    """The changes to a training step to try, cheapest first."""
    d, m = cfg.data, cfg.model
    out: list[list[str]] = []
    caches = []
    if d.center_crop and d.cache_latents is False:
        caches.append("data.cache_latents=true")
    if d.cache_text_encoder_outputs is False and not cfg.adapter.train_text_encoder:
        caches.append("data.cache_text_encoder_outputs=true")
    if caches:
        out.append(caches)
    if optimizer_node(cfg.optim)["_target_"] == ADAMW:
        out.append(["optim=adamw8bit"])  # its preset (conf/optim/adamw8bit.yaml): the same arguments, 8-bit state
    if not m.gradient_checkpointing:
        out.append(["model.gradient_checkpointing=true"])
    if m.weight_dtype == WeightDtype.fp32 and cfg.adapter.kind != AdapterKind.full:
        out.append([f"model.weight_dtype={'bf16' if device.bf16 else 'fp16'}"])
    if d.batch_size > 1:
        acc = cfg.trainer.accumulate_grad_batches * d.batch_size
        out.append(["data.batch_size=1", f"trainer.accumulate_grad_batches={acc}"])
    res = d.resolution
    for r in (res * 3 // 4 // 64 * 64, res // 2 // 64 * 64):
        if r >= 64 and r < res:
            out.append([f"data.resolution={r}"])
    return out


def _merge(overrides: list[str], added: list[str]) -> list[str]:
    keys = {a.split("=", 1)[0] for a in added}
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+") not in keys] + added


def fit(overrides: list[str], config_name: str, plan, budget_gib: float, device: Device) -> FitResult:
    """Re-forecast with each candidate added in turn until the peak fits `budget_gib`; ConfigError if none does."""
    from sdft.run.plan.compose import compose_run, plan_run

    limit = budget_gib * GiB
    peak, kept, tried = plan.peak, [], []
    if peak <= limit:
        return FitResult([], peak, budget_gib, tried)
    phase_cfg = plan.phases[-1][0]
    queue, meter = candidates(phase_cfg, device), meter_candidate(phase_cfg)
    while queue or meter:
        f = plan.phases[-1][1]
        if meter and f.grid_peak > f.step_peak:
            added, meter = meter, None
        elif queue:
            added = queue.pop(0)
        else:
            break
        trial = plan_run(compose_run(_merge(overrides, kept + added), config_name), device)
        tried.append((" ".join(added), trial.peak))
        if trial.peak < peak:
            kept, peak, plan = kept + added, trial.peak, trial
        if peak <= limit:
            return FitResult(kept, peak, budget_gib, tried)
    raise ConfigError(
        f"Nothing fits in {budget_gib:g} GiB: the lowest forecast is {peak / GiB:.2f} GiB with "
        f"{' '.join(kept) or 'no change'}. Use a device with more memory or a smaller model."
    )


def fit_report(result: FitResult, label: str) -> str:
    lines = [f"fit {label}:"]
    for added, peak in result.tried:
        lines.append(f"  + {added}: {peak / GiB:.2f} GiB")
    if not result.overrides:
        lines.append(f"  fits as configured ({result.peak / GiB:.2f} GiB)")
    else:
        lines.append(f"  add: {' '.join(result.overrides)}  -> {result.peak / GiB:.2f} GiB")
    return "\n".join(lines)
