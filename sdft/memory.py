"""Keep the resident set to what the training step reads (issue #21).

diffusers loads safetensors weights memory-mapped: a frozen weight counts in the process' resident set (RSS) once it is
read, as file-backed pages, and stays counted. Once the caches are filled the step never reads the VAE (cached
latents) or the text encoder (cached text states); `drop_resident_pages` gives their pages back (madvise
MADV_DONTNEED). Nothing is lost: the pages stay in the OS page cache and a later read (a validation grid) maps them
in again from the file. MADV_DONTNEED would discard pages the process WROTE to in a private file mapping (a LoRA
merged into the weights in place), so only mappings with no such page (`Anonymous: 0 kB` in /proc/self/smaps) are
touched; anything else (weights copied to anonymous memory, another dtype, Windows/macOS) is left as it is.
`trim_heap` returns freed heap memory to the system (glibc malloc_trim) before inference re-grows the set.
Hand-written: neither torch, diffusers nor Lightning exposes either call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
import re
import sys
from pathlib import Path
from typing import Iterable

import torch

log = logging.getLogger(__name__)

MADV_DONTNEED = 4  # linux/mman.h
SMAPS = Path("/proc/self/smaps")
_VMA = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+)\s*(.*)$")
_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        if sys.platform.startswith("linux"):
            try:
                _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                _LIBC.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            except OSError:
                _LIBC = False
    return _LIBC


def weight_ranges(modules: Iterable[torch.nn.Module]) -> list[tuple[int, int]]:
    """Sorted, merged (start, end) ranges of the whole pages inside the CPU storages of the modules' weights."""
    return tensor_ranges(p for m in modules for t in [*m.parameters(), *m.buffers()] for p in plain_tensors(t))


def plain_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The tensors holding a tensor's data: itself, or the inner tensors of a wrapper subclass (optimum-quanto's quantized
    weights, model.quantize), whose own storage has no data pointer."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is None:
        return [tensor]
    names, _ = flatten()
    return [p for name in names for p in plain_tensors(getattr(tensor, name))]


def tensor_ranges(tensors: Iterable[torch.Tensor]) -> list[tuple[int, int]]:
    """Sorted, merged (start, end) ranges of the whole pages inside the tensors' CPU storages."""
    seen, spans = set(), []
    for tensor in tensors:
        if tensor.device.type != "cpu":
            continue
        storage = tensor.untyped_storage()
        start = storage.data_ptr()
        if start in seen or storage.nbytes() == 0:
            continue
        seen.add(start)
        spans.append((start, start + storage.nbytes()))
    page = mmap.PAGESIZE
    merged: list[tuple[int, int]] = []
    for s, e in sorted(((s + page - 1) // page * page, e // page * page) for s, e in spans):  # never a shared edge
        if e <= s:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def clean_file_mappings(smaps: str) -> list[tuple[int, int]]:
    """(start, end) of the file-backed mappings in an smaps text that hold no page the process wrote to."""
    out, current = [], None
    for line in smaps.splitlines():
        vma = _VMA.match(line)
        if vma:
            start, end, inode, path = int(vma[1], 16), int(vma[2], 16), int(vma[3]), vma[4]
            file_backed = inode != 0 and path.startswith("/") and not path.endswith(" (deleted)")
            current = (start, end) if file_backed else None
        elif current and line.startswith("Anonymous:"):
            if int(line.split()[1]) == 0:
                out.append(current)
            current = None
    return out


def _intersect(ranges: list[tuple[int, int]], allowed: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for s, e in ranges:
        for a, b in allowed:
            lo, hi = max(s, a), min(e, b)
            if lo < hi:
                out.append((lo, hi))
    return out


def drop_resident_pages(modules: Iterable[torch.nn.Module]) -> int:
    """Give back the resident pages of these modules' memory-mapped, unmodified weights; bytes advised (0: none or
    not Linux)."""
    return _drop(weight_ranges(modules))


def _drop(ranges: list[tuple[int, int]]) -> int:
    libc = _libc()
    if not libc or not SMAPS.exists() or not ranges:
        return 0
    advised = 0
    for start, end in _intersect(ranges, clean_file_mappings(SMAPS.read_text())):
        if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_DONTNEED) == 0:
            advised += end - start
    return advised


def to_dtype(model: torch.nn.Module, dtype: torch.dtype, batch_bytes: int = 256 << 20) -> None:
    """`model.to(dtype=dtype)` (floating-point parameters and buffers, as Module.to converts them) that gives back
    the source pages as it goes: converting a memory-mapped fp32 model all at once keeps every fp32 page resident
    beside the new copy until the end (SD 1.5's U-Net: 3.4 GB + 1.7 GB at the peak)."""
    done: list[torch.Tensor] = []  # converted sources, held until their pages are given back (see _drop's guard)
    size = 0
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for key, tensor in table.items():
                if tensor is None or not tensor.is_floating_point() or tensor.dtype == dtype:
                    continue
                source = tensor.data
                if isinstance(tensor, torch.nn.Parameter):
                    tensor.data = source.to(dtype)
                else:
                    table[key] = source.to(dtype)
                done.append(source)
                size += source.nbytes
        if size >= batch_bytes:
            _drop(tensor_ranges(done))
            done, size = [], 0
    _drop(tensor_ranges(done))


def resident_bytes() -> int:
    """The process' resident set size in bytes (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        return 0


def trim_heap() -> None:
    """Give freed heap memory back to the system (glibc only; a no-op elsewhere)."""
    libc = _libc()
    if libc and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
