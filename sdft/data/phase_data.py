"""One phase's dataset, worked out once: `run()` builds a `PhaseData` per phase up front (every phase's data is checked
before the first one trains) and hands it to `prepare`, so no step below re-resolves or re-scans the folders."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from sdft.data.datamodule import DatasetReport, scan_dataset, split_validation
from sdft.data.dataset import Example


@dataclass
class PhaseData:
    """The resolved data settings (a kohya TOML's merged in), the scan of every folder, and the train/held-out split."""

    settings: DictConfig
    report: DatasetReport
    instances: list[Example]  # instance examples trained on
    held_out: list[Example]  # data.validation_split's share, for val/fixed_noise_loss


def phase_data(cfg: DictConfig) -> PhaseData:
    """Resolve, scan (bad folders and images fail here, before any model loads) and split one phase's data."""
    report = scan_dataset(cfg.data)
    instances, held_out = split_validation(report.examples, report.settings.validation_split, cfg.seed)
    return PhaseData(report.settings, report, instances, held_out)
