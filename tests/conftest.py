"""Shared fixtures: the tiny model built once per session (offline), and configs composed from conf/ for tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import sdft.config  # noqa: F401  (registers the schema)

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
EXAMPLE_SUBJECT = ROOT / "datasets" / "example_subject"


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


def compose_config(overrides: list[str] | None = None):
    """Compose conf/config.yaml with overrides, exactly as train.py would (without the hydra node)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))


FAST = [
    "data.resolution=64",
    "data.batch_size=1",
    "trainer.max_steps=3",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "callbacks.validation_steps=2",
    "callbacks.validation_seeds=[0]",
    "callbacks.checkpoint_every_n_steps=0",
    "callbacks.validation_every_n_steps=0",
    "prior.generation_steps=2",
    "prior.num_class_images=2",
]


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


@pytest.fixture(scope="session")
def tiny_pipe_factory(tiny_cache):
    """Fresh tiny pipelines loaded from the cached folder (each call a new, independent pipeline)."""
    from sdft.config import ModelConfig
    from sdft.models.loading import load_pipeline

    def make():
        return load_pipeline(ModelConfig(path="tiny", cache_dir=str(tiny_cache)))

    return make


def render(pipe, prompt: str = "photo of sks person") -> np.ndarray:
    """A 64 px, 2-step, seed-0 image as a float array: the tests' way to compare two pipelines' outputs."""
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt, num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())
