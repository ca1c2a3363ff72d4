"""The plan's trace mode (sdft/run/plan/tracker.py) and counted optimizer (optim_count.py) against what they replace:
FLOPs as torch's FlopCounterMode counts them, the optimizer's state and step temporaries as a traced step has them."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sdft.run.plan.arch import fake_mode
from sdft.run.plan.optim_count import count, countable
from sdft.run.plan.tracker import LiveBytes


class Net(torch.nn.Module):
    """Convolution, linear layers and a batched matmul: the FLOP-counted operators of a U-Net step, in miniature."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.a = torch.nn.Linear(8, 24)
        self.b = torch.nn.Linear(24, 8, bias=False)

    def forward(self, x):
        h = torch.nn.functional.silu(self.conv(x)).flatten(2).transpose(1, 2)  # (n, 16, 8)
        h = self.b(self.a(h))
        return torch.bmm(h, h.transpose(1, 2)).mean()


def test_flops_as_flop_counter_mode_counts_them():
    net, x = Net(), torch.randn(2, 3, 4, 4)
    with FlopCounterMode(display=False) as reference:
        net(x).backward()
    live = LiveBytes()
    with live:
        net(x).backward()
    assert reference.get_total_flops() > 0 and live.flops == reference.get_total_flops()


def test_convolution_weight_gradients_are_counted_apart():
    """A trained convolution's backward computes its weight gradient, a forward's FLOPs, which a CPU runs at about
    a third of the rate of the rest (devices.py): counted apart, and only when the weight trains."""
    from torch.utils.flop_counter import conv_flop_count

    net, x = Net(), torch.randn(2, 3, 4, 4, requires_grad=True)
    forward = conv_flop_count([2, 3, 4, 4], [8, 3, 3, 3], [2, 8, 4, 4])
    live = LiveBytes()
    with live:
        net(x).backward()
    assert live.weight_grad_flops == forward and live.weight_grad_flops < live.flops
    net.conv.weight.requires_grad_(False)
    frozen = LiveBytes()
    with frozen:
        net(x).backward()  # the input gradient only
    assert frozen.weight_grad_flops == 0 and frozen.flops == live.flops - forward


def test_transient_peak_outlives_the_peak():
    """A step that peaks after its activations are freed (a full fine-tune at its optimizer step) still made them:
    `transient_peak` keeps their most, which the C heap term is taken from (forecast.step_heap)."""
    live = LiveBytes()
    with live:
        act = torch.empty(1 << 20)  # 4 MiB of activations, freed before the peak
        del act
    grads = [torch.empty(1 << 20) for _ in range(2)]
    for g in grads:
        live.track(g, "trainable")  # 8 MiB of gradients (made outside the mode, so never workspace): the peak
    assert live.peak == 8 << 20 and live.at_peak["activations"] + live.at_peak["workspace"] == 0
    assert live.transient_peak == 4 << 20


def test_attention_on_the_cpu_is_counted():
    """SDPA on CPU tensors (what every trace runs) dispatches to the CPU flash kernel, which torch's FLOP table lacks:
    counted with the formulas of the CUDA kernels (2 matmuls forward; 5 backward, the scores recomputed)."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    q, k, v = (torch.randn(2, 4, 64, 16, requires_grad=True) for _ in range(3))
    live = LiveBytes()
    with live:
        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
    shape = (2, 4, 64, 16)
    assert live.flops == sdpa_flop_count(shape, shape, shape) + sdpa_backward_flop_count(shape, shape, shape, shape)
    assert live.flops == (2 + 5) * 2 * (2 * 4 * 64 * 64 * 16)


def _traced_step(opt, params) -> tuple[int, int]:
    """(state bytes, peak bytes over what is live before the step) of a step traced on fake tensors."""
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()  # the state, as make_optimizer makes it
    live = LiveBytes()
    for p in params:
        live.track(p, "trainable")
        p.grad = torch.zeros_like(p)
        live.track(p.grad, "trainable")
    live.track_optimizer(opt)
    before = sum(live.live.values())
    live.peak = 0
    with live:
        opt.step()
    states = LiveBytes()
    states.track_optimizer(opt)
    return states.live["trainable"], live.peak - before


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: torch.optim.AdamW(ps, lr=1e-3),
        lambda ps: torch.optim.AdamW(ps, lr=1e-3, amsgrad=True),
        lambda ps: torch.optim.Adam(ps, lr=1e-3, weight_decay=0.1),  # coupled decay: one more temporary
        lambda ps: torch.optim.Adam(ps, lr=1e-3, weight_decay=0.1, maximize=True),
        lambda ps: torch.optim.AdamW([{"params": ps[:2]}, {"params": ps[2:], "lr": 1e-4}], lr=1e-3),
    ],
)
def test_counted_optimizer_equals_the_traced_step(make):
    """Byte for byte: the state and the step's temporaries of torch's single-tensor Adam / AdamW path."""
    with fake_mode():
        shapes = [(640, 64), (64,), (64, 2000), (3000,), (17, 5)]  # sizes in any order, not multiples of 512 bytes
        params = [torch.nn.Parameter(torch.empty(s)) for s in shapes]
        opt = make(params)
        assert countable(opt)
        counted = count(opt)
        state, step_peak = _traced_step(opt, params)
    assert counted.state == state and counted.step_peak == step_peak > 0


def test_other_optimizers_are_traced():
    params = [torch.nn.Parameter(torch.zeros(4))]
    assert not countable(torch.optim.SGD(params, lr=0.1))
    assert not countable(torch.optim.AdamW(params, lr=0.1, foreach=True))


def test_autocast_weight_copies_count_as_weights():
    """Autocast's half-precision copy of a frozen weight lives through the step: weights, not activations (the C-heap
    term of the cpu forecast applies to activations and workspace only)."""
    from sdft.run.plan.tracker import rounded

    lin = torch.nn.Linear(64, 32).requires_grad_(False)
    live, x = LiveBytes(), torch.randn(4, 64)
    live.track_module(lin)
    with live, torch.autocast("cpu", dtype=torch.bfloat16):
        lin(x)
    fp32, bf16 = (rounded(64 * 32 * n) + rounded(32 * n) for n in (4, 2))
    assert live.at_peak["weights"] == fp32 + bf16
    assert live.at_peak["activations"] == rounded(4 * 64 * 2) + rounded(4 * 32 * 2)  # the input's copy, the output
