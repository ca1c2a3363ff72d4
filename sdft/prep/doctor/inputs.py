"""The dataset as training sees it: resolved and scanned by sdft/data (the same code a run uses), one `Item` per image.

Sources: a folder / kohya tree / kohya TOML / data YAML (sdft.prep.check.load_data_config, as `sdft data check`), a
run config's phases (`--config-name`, composed as train.py does), or a `PhaseData` from a training run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from sdft.config import ModelFamily
from sdft.data.buckets import SD1_NATIVE, plan_buckets, with_native_sizes
from sdft.data.captions import caption_path, read_caption
from sdft.data.datamodule import DatasetReport, scan_dataset
from sdft.families import get_family
from sdft.prep.doctor.findings import Item

NATIVE_BY_MODEL = {
    "tiny": 64,
    "sdxl_tiny": 64,
    "sd2_tiny": 64,
    "toy": 32,
}  # the offline models' own sizes (sdft/models, sdft/toy)


def native_size(model_cfg) -> int:
    """The base's native size without loading it (null data sizes follow it): the offline models' own, the family's (model.family)
    or 1024 for an SDXL-named base, else SD 1.x's 512. A run replaces the guess with the loaded model's value."""
    if model_cfg is None:
        return SD1_NATIVE
    path = str(model_cfg.get("path") or "")
    if path in NATIVE_BY_MODEL:
        return NATIVE_BY_MODEL[path]
    family = model_cfg.get("family")
    if family is not None:
        return get_family(family).native_size_of(path)
    return get_family(ModelFamily.sdxl).native_resolution if "xl" in path.lower() else SD1_NATIVE


@dataclass
class DoctorData:
    """One dataset (a phase's): its settings (sizes resolved), the scan, and every readable image as an `Item`."""

    label: str
    settings: DictConfig
    report: DatasetReport
    items: list[Item]
    native: int = SD1_NATIVE  # the base model's native size (what a null data.resolution trains at)

    @property
    def instances(self) -> list[Item]:
        return [i for i in self.items if not i.is_reg]


def caption_text(path: Path, extension: str, use_captions: bool) -> str | None:
    """The caption file's text as one line ("" for an empty file), None when there is none (or captions are off)."""
    cap = caption_path(path, extension)
    if not use_captions or not cap.is_file():
        return None
    return " ".join(read_caption(cap).split())


def from_report(report: DatasetReport, label: str, native: int = SD1_NATIVE) -> DoctorData:
    settings = with_native_sizes(report.settings.copy(), native)
    examples = [(e, False) for e in report.examples] + [(e, True) for e in report.reg_examples]
    buckets = plan_buckets([e.size for e, _ in examples], settings)
    items = []
    for (e, is_reg), bucket in zip(examples, buckets):
        ext = e.concept.caption_extension if e.concept else settings.caption_extension
        caption = caption_text(e.path, ext, settings.use_captions)
        items.append(Item(e.path, e.concept, e.prompt, caption, e.size, tuple(bucket), is_reg))
    return DoctorData(label, settings, report, items, native)


def from_data_settings(settings: DictConfig, label: str, native: int = SD1_NATIVE) -> DoctorData:
    """Scan like training, but unreadable files are reported (findings), not raised."""
    return from_report(scan_dataset(settings, on_bad="report"), label, native)


def from_source(source: str, prompt: str | None = None, overrides: list[str] | None = None) -> DoctorData:
    """A folder, kohya tree, kohya TOML or data YAML, resolved as `sdft data check` does."""
    from sdft.prep.check import load_data_config

    settings = load_data_config(source, prompt, overrides)
    return from_data_settings(settings, str(source))
