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


def two_kohya_phases(tmp_path) -> list[str]:
    """Overrides of a two-phase run on a kohya TOML dataset (its resolution from the TOML)."""
    images = tmp_path / "img" / "3_sks character"
    images.mkdir(parents=True)
    for p in sorted((EXAMPLE_SUBJECT / "face").glob("*.png"))[:2]:
        shutil.copy(p, images)
    toml = tmp_path / "data.toml"
    toml.write_text(f'[general]\nresolution = 64\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "{images}"\n')
    return [
        f"data.kohya_toml={toml}",
        "data.instance_dir=null",
        "data.resolution=null",
        "prior=none",
        "phases=[{name: face}, {name: body, start: stack}]",
    ]


def counting(monkeypatch) -> Counter:
    """Counts of data_settings, load_kohya_toml and with_native_sizes calls and of every TOML parse from now on."""
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
    return counts


def test_two_phase_run_resolves_each_phase_once(fast_config, tmp_path, monkeypatch):
    overrides = two_kohya_phases(tmp_path)
    counts = counting(monkeypatch)
    summary = run(fast_config(*overrides, "logger=none", "callbacks.validation_seeds=[]", "trainer.max_steps=1"))
    assert [p["steps"] for p in summary["phases"]] == [1, 1]
    assert counts == {"data_settings": 2, "load_kohya_toml": 2, "toml parses": 2, "with_native_sizes": 2}, counts


def test_the_ui_check_resolves_each_phase_once(tmp_path, monkeypatch):
    """The Train tab's check (sdft/ui/train.py inspect_form) is the run's checked_phases: each phase's settings
    resolved and its TOML parsed once (it resolved them twice per phase with check_config's own fallback)."""
    from sdft.ui.train import inspect_form

    overrides = two_kohya_phases(tmp_path)
    counts = counting(monkeypatch)
    checked = inspect_form(overrides)
    assert [p.phase.name for p in checked.phases] == ["face", "body"] and len(checked.datas) == 2
    assert all(d.settings.resolution == 64 for d in checked.datas)  # the TOML's resolution
    assert counts == {"data_settings": 2, "load_kohya_toml": 2, "toml parses": 2}, counts
