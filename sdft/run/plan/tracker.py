"""Live bytes by kind while a step runs on fake tensors, and their split at the peak.

Hand-written because torch's MemTracker (torch.distributed._tools.mem_tracker), which does this, rescans every live
tensor on every operator (O(ops x tensors): 4 minutes for the tiny model's step, hours for SD 1.5) and refuses frozen
parameters (it hooks every one). This keeps one running total per kind instead: a storage is counted when an operator
first returns it and uncounted when it is freed (a weak reference's callback), rounded to 512 bytes as allocators do.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

KINDS = ("weights", "trainable", "activations", "workspace")


def _rounded(nbytes: int) -> int:
    return (nbytes + 511) // 512 * 512


class LiveBytes(TorchDispatchMode):
    """`track(tensor, kind)` registers tensors made outside (weights, trained parameters, optimizer state); inside
    the mode, new storages count as `self.phase` ("activations" in the forward pass, "workspace" after), gradients of
    trained parameters as "trainable". `peak` is the highest total, `at_peak` its split by kind."""

    def __init__(self):
        super().__init__()
        self.live = dict.fromkeys(KINDS, 0)
        self.peak = 0
        self.at_peak = dict(self.live)
        self.phase = "activations"
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
        size = _rounded(st.nbytes())
        self.live[kind] += size
        self._refs[key] = (weakref.ref(st, lambda _, k=key: self._free(k)), kind, size)
        total = sum(self.live.values())
        if total > self.peak:
            self.peak, self.at_peak = total, dict(self.live)

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
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self.track(t, self.phase)
        return out
