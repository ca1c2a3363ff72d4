"""The optimizer's state and the temporaries of its step, counted from the parameter list for torch's Adam and AdamW
(the default optimizer) instead of traced: tracing them ran ~10 operators per trained tensor twice (a warm-up step
that makes the state, then the traced step): ~3 s of SDXL's plan for its ~1500 LoRA tensors. Any other class, or
Adam(W) on its foreach / fused / capturable / differentiable paths, is traced as before (trace.py).

What torch.optim.adam._single_tensor_adam does, per trained tensor p of S bytes: state `exp_avg`, `exp_avg_sq`
(S each, `max_exp_avg_sq` too with amsgrad) and a 4-byte `step` tensor; in the step, `exp_avg_sq.sqrt()` and its
quotient by the bias correction (2 x S at once; the quotient, `denom`, stays bound until the next tensor's is made), plus one S for the changed gradient
(`-grad` with maximize, `grad + weight_decay * p` for Adam's coupled weight decay; alive through the update). The step has no FLOPs in
torch's FLOP table (element-wise only), as in the trace. tests/test_plan_tracker.py checks counted against traced.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdft.run.plan.tracker import rounded  # the traced bytes' rounding

COUNTED = (torch.optim.Adam, torch.optim.AdamW)
PLAIN = ("foreach", "fused", "capturable", "differentiable")  # any of these set: another code path, traced


@dataclass
class CountedOptimizer:
    state: int  # bytes of the optimizer state, all trained tensors
    step_peak: int  # the step's largest set of temporaries alive at once


def countable(opt: torch.optim.Optimizer) -> bool:
    """Whether `opt` runs the single-tensor Adam / AdamW path counted here."""
    if type(opt) not in COUNTED:
        return False
    return all(not group.get(flag) for group in opt.param_groups for flag in PLAIN)


def count(opt: torch.optim.Optimizer) -> CountedOptimizer:
    """State bytes and the step's temporaries of an optimizer for which `countable` holds."""
    state = step_peak = 0
    for group in opt.param_groups:
        per_state = 3 if group.get("amsgrad") else 2
        coupled = type(opt) is torch.optim.Adam and not group.get("decoupled_weight_decay")
        # sqrt(exp_avg_sq) and its quotient, + the changed gradient (-grad, then + weight_decay * p: one at a time)
        temps = 3 if group.get("maximize") or (coupled and group.get("weight_decay")) else 2
        previous = 0  # the last tensor's `denom` stays bound until the next one's is made
        for p in group["params"]:
            size = rounded(p.numel() * p.element_size())
            state += per_state * size + rounded(4)  # + the step count, a float32 scalar
            step_peak = max(step_peak, previous + temps * size)
            previous = size
    return CountedOptimizer(state, step_peak)
