"""sdft/memory.py and the ResidentMemory callback (issue #21): frozen, memory-mapped weights the step does not read
leave the resident set, nothing they hold changes, and weights the process wrote to are never touched."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import AutoencoderKL

from sdft.callbacks.resident_memory import unread_models
from sdft.memory import clean_file_mappings, drop_resident_pages, weight_ranges
from sdft.models.tiny import ensure_tiny_model

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc/self/smaps are Linux's")

SMAPS = """\
7f0000000000-7f0000100000 r--p 00000000 08:01 1234   /models/unet/diffusion_pytorch_model.safetensors
Size:               1024 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 r--p 00000000 08:01 1235   /models/vae/diffusion_pytorch_model.safetensors
Size:               1024 kB
Anonymous:             8 kB
7f0000400000-7f0000500000 rw-p 00000000 00:00 0
Size:               1024 kB
Anonymous:          1024 kB
7f0000600000-7f0000700000 r--p 00000000 00:05 99   /tmp/gone.safetensors (deleted)
Anonymous:             0 kB
"""


def test_only_unwritten_file_mappings_are_candidates():
    assert clean_file_mappings(SMAPS) == [(0x7F0000000000, 0x7F0000100000)]


def test_weight_ranges_are_whole_pages_inside_each_storage():
    a, b = torch.zeros(10_000), torch.zeros(3)
    ranges = weight_ranges([torch.nn.ParameterList([torch.nn.Parameter(a), torch.nn.Parameter(b)])])
    start, end = a.untyped_storage().data_ptr(), a.untyped_storage().data_ptr() + a.untyped_storage().nbytes()
    assert ranges and all(s % 4096 == 0 and e % 4096 == 0 for s, e in ranges)
    assert all(start <= s and e <= end for s, e in ranges)  # the 12-byte tensor holds no whole page: not listed


def _rss_file_kib() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("RssFile:"))


@linux
def test_pages_given_back_and_values_unchanged():
    vae = AutoencoderKL.from_pretrained(ensure_tiny_model() / "vae").eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = vae.encode(x).latent_dist.mean
    assert drop_resident_pages([vae]) > 0, "the tiny VAE's weights should be memory-mapped from its safetensors file"
    with torch.no_grad():
        after = vae.encode(x).latent_dist.mean
    assert torch.equal(before, after)


@linux
def test_weights_written_in_place_are_never_dropped():
    """MADV_DONTNEED on a private file mapping would revert written pages to the file's content (a merged LoRA
    would silently vanish): a mapping holding any written page is skipped."""
    vae = AutoencoderKL.from_pretrained(ensure_tiny_model() / "vae").eval()
    weight = max(vae.parameters(), key=lambda p: p.numel())
    assert weight.untyped_storage().nbytes() > 2 * 4096  # spans whole pages, so it would be advised unguarded
    with torch.no_grad():
        weight.add_(1.0)  # in place: the page becomes the process' own copy
    expected = weight.detach().clone()
    drop_resident_pages([vae])
    assert torch.equal(weight.detach(), expected)


def test_unread_models_follow_the_caches():
    frozen = [torch.nn.Linear(2, 2).requires_grad_(False) for _ in range(3)]
    module = SimpleNamespace(vae=frozen[0], text_encoder=frozen[1], text_encoder_2=None, train_text_encoder=False)
    assert unread_models(module, SimpleNamespace(latents=None, texts=None)) == []
    assert unread_models(module, SimpleNamespace(latents=object(), texts=None)) == [frozen[0]]
    assert unread_models(module, SimpleNamespace(latents=object(), texts={})) == frozen[:2]
    module.train_text_encoder = True
    assert unread_models(module, SimpleNamespace(latents=None, texts={})) == []
    module.train_text_encoder, module.text_encoder = False, torch.nn.Linear(2, 2)  # a trained (LoRA) part: kept
    assert unread_models(module, SimpleNamespace(latents=None, texts={})) == []


@linux
def test_training_with_released_pages_equals_training_without(fast_config, monkeypatch):
    """Two 3-step runs with both caches: the callback gives pages back and the trained LoRA is bit-identical to a
    run without it (a page that came back wrong would change the weights)."""
    import lightning as L
    from safetensors.torch import load_file

    import sdft.callbacks.resident_memory as resident
    import sdft.run.callbacks
    from sdft.run.train import run

    given_back = []
    real = resident.drop_resident_pages
    monkeypatch.setattr(resident, "drop_resident_pages", lambda models: given_back.append(real(models)) or 0)
    caches = ["data.cache_latents=true", "data.cache_text_encoder_outputs=true", "callbacks.validation_seeds=[]"]
    base = Path(fast_config().output_dir)
    run(fast_config(*caches, f"output_dir={base / 'with'}"))
    assert given_back and given_back[0] > 0  # the VAE's and text encoder's pages, before the first step
    monkeypatch.setattr(sdft.run.callbacks, "ResidentMemory", L.Callback)
    run(fast_config(*caches, f"output_dir={base / 'without'}"))
    (with_file,), (without_file,) = (
        list((base / d).rglob("pytorch_lora_weights.safetensors")) for d in ("with", "without")
    )
    with_, without = load_file(with_file), load_file(without_file)
    assert with_.keys() == without.keys() and all(torch.equal(with_[k], without[k]) for k in with_)


def test_to_dtype_equals_module_to():
    from sdft.memory import to_dtype

    folder = ensure_tiny_model() / "vae"
    ours, reference = AutoencoderKL.from_pretrained(folder), AutoencoderKL.from_pretrained(folder)
    to_dtype(ours, torch.bfloat16, batch_bytes=4096)  # small batches: pages are given back many times on the way
    reference.to(dtype=torch.bfloat16)
    a, b = ours.state_dict(), reference.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    assert all(isinstance(p, torch.nn.Parameter) for p in ours.parameters())


def test_pages_given_back_again_only_after_the_resident_set_grew(monkeypatch):
    import sdft.callbacks.resident_memory as resident

    rss, calls = iter([1000, 1000, 1000 + resident.REGROWTH - 1, 1000 + resident.REGROWTH, 1000, 1000]), []
    monkeypatch.setattr(resident, "resident_bytes", lambda: next(rss))
    monkeypatch.setattr(resident, "drop_resident_pages", lambda models: calls.append(len(models)) or 0)
    monkeypatch.setattr(resident, "unread_models", lambda module, dm: [object()])
    callback, trainer = resident.ResidentMemory(), SimpleNamespace(datamodule=None)
    for _ in range(4):  # first batch; +0; +REGROWTH-1; +REGROWTH (a grid read the pages again)
        callback.on_train_batch_start(trainer, None, None, 0)
    assert calls == [1, 1]


@linux
def test_grid_gives_the_text_encoder_back_and_renders_the_same(fast_config, monkeypatch):
    """Each grid row gives the text encoder's pages back once its prompts are encoded (a CPU grid's memory peak,
    issue #21), and the grid is pixel-identical to one rendered without it (the next row maps them in again)."""
    import numpy as np

    import sdft.callbacks.validation_grid as grid_module
    from helpers.wiring import prepare_for_test

    parts = prepare_for_test(fast_config("callbacks.validation_seeds=[0,1]", "callbacks.validation_steps=3"))
    grid = next(c for c in parts.trainer.callbacks if isinstance(c, grid_module.ValidationGrid))
    monkeypatch.setattr(grid_module, "drop_resident_pages", lambda models: 0)
    kept = np.asarray(grid.render(parts.module))
    calls, real = [], drop_resident_pages
    monkeypatch.setattr(grid_module, "drop_resident_pages", lambda models: calls.append((models, real(models))) or 0)
    given_back = np.asarray(grid.render(parts.module))
    assert len(calls) == len(grid.prompts) == 2  # once per row, not once per denoising step
    assert all(models == [parts.module.text_encoder] for models, _ in calls)
    assert calls[0][1] > 0, "the tiny text encoder's weights should be memory-mapped from its safetensors file"
    assert np.array_equal(kept, given_back)
