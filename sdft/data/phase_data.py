"""One phase's dataset, worked out once: the run resolves each phase's data settings (a kohya TOML read once), checks
the config against them, then scans every phase (every phase's data is checked before the first one trains) into a
`PhaseData` that the wiring (sdft/run/wiring.py) takes; nothing below it re-resolves the settings or re-scans."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from sdft.data.datamodule import DatasetReport, scan_settings, split_validation
from sdft.data.dataset import Example
from sdft.data.folders import data_settings
from sdft.data.kohya_toml import KohyaDataset, load_kohya_toml


@dataclass
class PhaseSettings:
    """A phase's data config resolved: a kohya TOML's dataset-level settings merged in, and the TOML as read."""

    settings: DictConfig
    kohya: KohyaDataset | None


@dataclass
class PhaseData:
    """The resolved data settings (a kohya TOML's merged in; the wiring fills null sizes with the loaded model's native
    ones, once), the scan of every folder, and the train/held-out split."""

    settings: DictConfig
    report: DatasetReport
    instances: list[Example]  # instance examples trained on
    held_out: list[Example]  # data.validation_split's share, for val/fixed_noise_loss


def phase_settings(cfg: DictConfig) -> PhaseSettings:
    """Resolve one phase's data settings: `data_settings` once, its kohya TOML (if any) read once."""
    kohya = load_kohya_toml(cfg.data.kohya_toml) if cfg.data.kohya_toml else None
    return PhaseSettings(data_settings(cfg.data, kohya), kohya)


def phase_data(cfg: DictConfig, resolved: PhaseSettings) -> PhaseData:
    """Scan (bad folders and images fail here, before any model loads) and split one phase's data; `resolved`: its
    `phase_settings` (the run checks the config against them first: sdft.run.train.checked_phases)."""
    report = scan_settings(resolved.settings, resolved.kohya)
    instances, held_out = split_validation(report.examples, report.settings.validation_split, cfg.seed)
    return PhaseData(report.settings, report, instances, held_out)
