"""The repository's paths, conf/ composed as train.py composes it, and the overrides of a quick CPU run."""

from __future__ import annotations

import sys

from pathlib import Path

from hydra import compose, initialize_config_dir

import sdft.config  # noqa: F401  (registers the schema)

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
EXAMPLE_SUBJECT = ROOT / "datasets" / "example_subject"


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
    "callbacks.likeness.enabled=false",  # the likeness meter has its own tests (tests/test_likeness_*.py)
    "prior.generation_steps=2",
    "prior.num_class_images=2",
]


def tiny_multirun(tiny_cache, sweep, *overrides: str) -> list[str]:
    """`train.py -m` on the tiny model, 1 step a job, adapter.rank=2,4 swept into `sweep`, plus `overrides` (more
    swept values, a Hydra launcher): the sweep and launcher tests' command."""
    return [
        sys.executable,
        "train.py",
        "-m",
        *overrides,
        "model=tiny",
        "trainer=cpu",
        "trainer.enable_progress_bar=false",
        "data.resolution=64",
        "trainer.max_steps=1",
        "callbacks.validation_seeds=[]",
        "callbacks.checkpoint_every_n_steps=0",
        f"model.cache_dir={tiny_cache}",
        "adapter.rank=2,4",
        f"hydra.sweep.dir={sweep}",
    ]
