"""One wiring step (issue 27 item 4): a run resolves each phase's data settings once, reads a kohya TOML once per phase
and fills null sizes once per phase; every consumer gets that one view."""

from __future__ import annotations

import shutil
import sys
import tomllib
from collections import Counter

from helpers.config import EXAMPLE_SUBJECT

from sdft.data import buckets, folders, kohya_toml
from sdft.run.train import run


def count_calls(monkeypatch, counts: Counter, module, name: str, within: str = "sdft") -> None:
    """Count calls of `module.name` wherever a module under `within` imported it (`from x import name` copies it)."""
    real = getattr(module, name)

    def counted(*args, **kwargs):
        counts[name] += 1
        return real(*args, **kwargs)

    for mod in list(sys.modules.values()):
        if (getattr(mod, "__name__", "") or "").startswith(within) and getattr(mod, name, None) is real:
            monkeypatch.setattr(mod, name, counted)


def test_two_phase_run_resolves_each_phase_once(fast_config, tmp_path, monkeypatch):
    images = tmp_path / "img" / "3_sks character"
    images.mkdir(parents=True)
    for p in sorted((EXAMPLE_SUBJECT / "face").glob("*.png"))[:2]:
        shutil.copy(p, images)
    toml = tmp_path / "data.toml"
    toml.write_text(f'[general]\nresolution = 64\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "{images}"\n')
    counts = Counter()
    count_calls(monkeypatch, counts, folders, "data_settings")
    count_calls(monkeypatch, counts, kohya_toml, "load_kohya_toml")
    for training in ("sdft.run", "sdft.data"):  # the data doctor fills a copy of its own for its guess before loading
        count_calls(monkeypatch, counts, buckets, "with_native_sizes", training)
    real_loads = tomllib.loads

    def loads(text, *args, **kwargs):  # every TOML parse, whoever asks
        counts["toml parses"] += 1
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr(tomllib, "loads", loads)
    summary = run(
        fast_config(
            f"data.kohya_toml={toml}",
            "data.instance_dir=null",
            "data.resolution=null",
            "prior=none",
            "logger=none",
            "callbacks.validation_seeds=[]",
            "trainer.max_steps=1",
            "phases=[{name: face}, {name: body, start: stack}]",
        )
    )
    assert [p["steps"] for p in summary["phases"]] == [1, 1]
    assert counts == {"data_settings": 2, "load_kohya_toml": 2, "toml parses": 2, "with_native_sizes": 2}, counts
