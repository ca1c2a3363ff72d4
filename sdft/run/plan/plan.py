"""`make_plan`: compose and check the run as train.py does, then forecast every phase."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from sdft.run.plan.arch import Architecture, architecture
from sdft.run.plan.devices import Device
from sdft.run.plan.forecast import PhaseForecast, forecast_phase


@dataclass
class Plan:
    cfg: DictConfig
    arch: Architecture
    device: Device
    phases: list[tuple[DictConfig, PhaseForecast]]

    @property
    def peak(self) -> int:
        return max(f.peak for _, f in self.phases)

    @property
    def seconds(self) -> float:
        return sum(f.total_seconds(c)["total"] for c, f in self.phases)

    @property
    def steps(self) -> int:
        return sum(f.data.steps for _, f in self.phases)


def make_plan(cfg: DictConfig, device: Device, checked: tuple) -> Plan:
    """`cfg`: the typed run config; `checked`: its (phases, datas), checked as train.py checks them
    (sdft.run.train.checked_phases; compose.plan_run does both)."""
    arch = architecture(cfg.model)  # a config not available offline fails before any tracing
    phases, datas = checked
    return Plan(cfg, arch, device, [(p, forecast_phase(p, d, arch, device)) for p, d in zip(phases, datas)])
