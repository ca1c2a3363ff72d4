"""Live bytes by kind while a step runs on fake tensors, their split at the peak, and the step's FLOPs.

Hand-written because torch's MemTracker (torch.distributed._tools.mem_tracker), which does the byte accounting,
rescans every live tensor on every operator (O(ops x tensors): 4 minutes for the tiny model's step, hours for SD 1.5)
and refuses frozen parameters (it hooks every one). This keeps one running total per kind instead: a storage is
counted when an operator first returns it and uncounted when it is freed (a weak reference's callback), rounded to
512 bytes as allocators do.

FLOPs: torch's own formulas (`torch.utils.flop_counter.flop_registry`, what `FlopCounterMode` reads), applied in this
same mode. FlopCounterMode as a second mode cost a third of the trace (its module tracker hooks every module call and
every backward node to attribute FLOPs per module, which the plan does not print); the totals are the same (tests/
test_plan_tracker.py). Added to torch's table: the CPU flash-attention kernels, which a trace on fake CPU tensors
dispatches SDPA to and which torch's table lacks (its attention formulas are for the CUDA kernels).
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import conv_flop_count, flop_registry

KINDS = ("weights", "trainable", "activations", "workspace")
TRANSIENT = ("activations", "workspace")  # made and freed within a step
HALF = (torch.bfloat16, torch.float16)
_DEVICE = torch.ops.prim.device.default  # asked on every operator's way in; returns no tensor
_CAST = torch.ops.aten._to_copy.default
aten = torch.ops.aten
FLOPS = {
    **flop_registry,
    # the CPU flash-attention kernels take (and return) what the CUDA ones do, in the same layout (b, heads, seq, dim)
    aten._scaled_dot_product_flash_attention_for_cpu: flop_registry[aten._scaled_dot_product_flash_attention],
    aten._scaled_dot_product_flash_attention_for_cpu_backward: flop_registry[
        aten._scaled_dot_product_flash_attention_backward
    ],
}


_CONV_BACKWARD = aten.convolution_backward


def conv_weight_grad_flops(args, kwargs) -> int:
    """The weight gradient's share of a convolution_backward call (a forward's FLOPs when its output mask asks for
    it, else 0): a kernel that runs slower than the rest on a CPU (devices.py `weight_grad_efficiency`)."""
    grad_out, x, w = args[:3]
    transposed = kwargs.get("transposed", args[7] if len(args) > 7 else False)
    mask = kwargs.get("output_mask", args[10] if len(args) > 10 else (True, True, True))
    if not mask[1]:
        return 0
    return conv_flop_count(list(x.shape), list(w.shape), list(grad_out.shape), transposed=transposed)


def rounded(nbytes: int) -> int:
    return (nbytes + 511) // 512 * 512


class LiveBytes(TorchDispatchMode):
    """`track(tensor, kind)` registers tensors made outside (weights, trained parameters, optimizer state); inside
    the mode, new storages count as `self.phase` ("activations" in the forward pass, "workspace" after), gradients of
    trained parameters as "trainable", copies of weights in another dtype (autocast's, kept for the step) as
    "weights". `peak` is the highest total, `at_peak` its split by kind; `flops` the FLOPs of
    the operators run inside the mode, `half_flops` those of them on 16-bit float inputs, `weight_grad_flops` the
    full-precision convolutions' weight gradients among them; `transient_peak` the most activations + workspace live
    at any one time (a full fine-tune peaks at its optimizer step, after the activations are freed)."""

    def __init__(self):
        super().__init__()
        self.live = dict.fromkeys(KINDS, 0)
        self.peak = 0
        self.at_peak = dict(self.live)
        self.phase = "activations"
        self.flops = 0
        self.half_flops = 0  # of `flops`, those of operators on bf16 / fp16 inputs
        self.weight_grad_flops = 0  # of `flops` (full precision), those of convolutions' weight gradients
        self.transient_peak = 0  # the most activations + workspace live at once (not necessarily at `peak`)
        self._refs: dict[int, tuple] = {}

    def track(self, tensor: torch.Tensor, kind: str) -> None:
        st = tensor.untyped_storage()
        key = st._cdata
        if key in self._refs:
            if self._refs[key][1] != kind and kind == "trainable":  # a gradient first seen as workspace
                _, old, size = self._refs[key]
                self.live[old] -= size
                self.live[kind] += size
                self._refs[key] = (self._refs[key][0], kind, size)
            return
        size = rounded(st.nbytes())
        self.live[kind] += size
        self._refs[key] = (weakref.ref(st, lambda _, k=key: self._free(k)), kind, size)
        self.observe()

    def observe(self, extra: int = 0, kind: str = "workspace") -> None:
        """Take the current total (plus `extra` bytes of `kind` that exist only for a moment) as a peak candidate."""
        total = sum(self.live.values()) + extra
        transient = self.live["activations"] + self.live["workspace"] + (extra if kind in TRANSIENT else 0)
        self.transient_peak = max(self.transient_peak, transient)
        if total > self.peak:
            self.peak, self.at_peak = total, dict(self.live)
            self.at_peak[kind] += extra

    def _free(self, key: int) -> None:
        entry = self._refs.pop(key, None)
        if entry is not None:
            self.live[entry[1]] -= entry[2]

    def track_module(self, module: torch.nn.Module) -> None:
        for p in module.parameters():
            self.track(p, "trainable" if p.requires_grad else "weights")
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(lambda q: self.track(q.grad, "trainable"))
        for b in module.buffers():
            self.track(b, "weights")

    def track_optimizer(self, optimizer) -> None:
        for state in optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    self.track(value, "trainable")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _DEVICE:
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        count = FLOPS.get(func._overloadpacket)
        if count is not None:
            flops = count(*args, **kwargs, out_val=out)
            self.flops += flops
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if first is not None and first.dtype in HALF:  # runs at the half-precision rate (AMX, tensor cores)
                self.half_flops += flops
            elif func._overloadpacket is _CONV_BACKWARD:
                self.weight_grad_flops += conv_weight_grad_flops(args, kwargs)
        kind = self.phase
        if func is _CAST and self._kind_of(args[0]) == "weights":  # autocast's half-precision copy of a weight
            kind = "weights"
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self.track(t, kind)
        return out

    def _kind_of(self, tensor) -> str | None:
        entry = self._refs.get(tensor.untyped_storage()._cdata) if isinstance(tensor, torch.Tensor) else None
        return entry and entry[1]
