"""Shared fixtures: the tiny model built once per session (offline), and configs composed from conf/ for tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers.config import FAST, compose_config


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject's addopts): one worker per core this process may use, at most 4 (each worker holds its own
    torch, tiny models and session fixtures: ~1.5 GB). Every test runs one torch thread (`one_thread`), so on 2 cores
    the second worker doubles what the suite gets done instead of idling."""
    return max(1, min(len(os.sched_getaffinity(0)), 4))


def pytest_collection_modifyitems(config, items) -> None:
    """Files holding a slow test first (stable otherwise): with `--dist loadfile` a worker takes whole files in this
    order, so the longest files start at once instead of being the last ones left running on one worker while the
    other idles (alphabetical order put test_toy_learning and the UI browser test last)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models are dominated by per-op overhead: one thread is as fast and never stalls under CPU contention."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """A session cache dir holding the tiny model; SDFT_CACHE_DIR points at it so nothing touches ~/.cache."""
    from sdft.models.tiny import ensure_tiny_model

    cache = tmp_path_factory.mktemp("sdft-cache")
    ensure_tiny_model(cache)
    old = os.environ.get("SDFT_CACHE_DIR")
    os.environ["SDFT_CACHE_DIR"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("SDFT_CACHE_DIR", None)
    else:
        os.environ["SDFT_CACHE_DIR"] = old


@pytest.fixture
def fast_config(tiny_cache, tmp_path):
    """A composer for quick CPU runs: tiny model, 64 px, 3 steps, outputs and class images under tmp_path."""

    def make(*overrides: str):
        return compose_config(
            FAST
            + [
                f"output_dir={tmp_path / 'out'}",
                f"model.cache_dir={tiny_cache}",
                f"data.class_dir={tmp_path / 'class'}",
                *overrides,
            ]
        )

    return make


@pytest.fixture
def tiny_dir(tiny_cache) -> Path:
    """The tiny model's diffusers folder (in the session cache)."""
    from sdft.models.tiny import ensure_tiny_model

    return ensure_tiny_model(tiny_cache)


@pytest.fixture(scope="session")
def tiny_pipe_factory(tiny_cache):
    """Fresh tiny pipelines loaded from the cached folder (each call a new, independent pipeline)."""
    from sdft.config import ModelConfig
    from sdft.families.load import load_pipeline

    def make():
        return load_pipeline(ModelConfig(path="tiny", cache_dir=str(tiny_cache)))

    return make
