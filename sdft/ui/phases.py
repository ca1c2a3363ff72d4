"""The Train tab's phases editor, free of gradio: a multi-phase preset's per-phase fields (conf/experiment/*.yaml
`phases:`, sdft/run/phases.py) as table rows, and the edited rows back into the per-phase overrides train.py takes on
its command line (`++phases.<i>.overrides.<section>.<key>=<value>`, `phases.<i>.name=`). Only changed cells become
overrides; the values are checked by composing the run as train.py does (sdft/ui/train.py `inspect_form`), so a
refused value gets the command line's message."""

from __future__ import annotations

from sdft.errors import ConfigError

# (column, the key inside a phase: "name" or an overrides path)
FIELDS = [
    ("name", "name"),
    ("steps", "trainer.max_steps"),
    ("lr", "optim.lr"),
    ("data folder", "data.instance_dir"),
    ("instance prompt", "data.instance_prompt"),
    ("class prompt", "data.class_prompt"),
]
COLUMNS = [column for column, _ in FIELDS]


def _value(cfg, phase, key: str):
    """The phase's own override, else the run's value (what the phase trains with)."""
    if key == "name":
        return phase.name
    section, field = key.split(".")
    own = (phase.overrides or {}).get(section) or {}
    return own[field] if field in own else cfg[section][field]


def preset_rows(cfg) -> list[list]:
    """One row per phase of a composed run config (empty: a single-phase run)."""
    return [[_value(cfg, phase, key) for _, key in FIELDS] for phase in cfg.phases]


def _same(a, b) -> bool:
    if a in (None, "") and b in (None, ""):
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a).strip() == str(b).strip()


def _text(value) -> str:
    """A table cell as a Hydra override value: numbers as typed, text quoted unless plain."""
    from sdft.ui.train import quote_value

    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return str(value)
    return quote_value(str(value).strip())


def phase_overrides(rows: list[list], preset: list[list]) -> list[str]:
    """The overrides for the cells that differ from the preset's rows (the same number of phases: adding or removing
    a phase is a YAML experiment's job)."""
    rows = [list(r) for r in rows or []]
    if len(rows) != len(preset):
        raise ConfigError(
            f"the phases table has {len(rows)} row(s) but the preset has {len(preset)} phase(s): edit the rows, do not "
            "add or remove them (a different set of phases is an experiment YAML: conf/experiment/dual_phase.yaml)."
        )
    out = []
    for i, (row, was) in enumerate(zip(rows, preset)):
        for (column, key), value, before in zip(FIELDS, row, was):
            if _same(value, before):
                continue
            if value in (None, ""):
                raise ConfigError(f"phases table, row {i + 1}, {column}: empty; give a value (the preset's: {before}).")
            path = f"phases.{i}.name" if key == "name" else f"++phases.{i}.overrides.{key}"
            out.append(f"{path}={_text(value)}")
    return out
