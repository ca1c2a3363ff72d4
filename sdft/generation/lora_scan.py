"""LoRAs in a folder: the scan `sdft ui` lists, and the names A1111 knows them by (for `<lora:name:weight>`).

A1111 (extensions-builtin/Lora/networks.py) names a LoRA file by its stem and also by its `ss_output_name` metadata
(kohya's output name, the "alias"); sdft adds the name its infotexts write for a run's
`<phase>/lora/pytorch_lora_weights.safetensors`: the phase (`lora_display_name`).
"""

from __future__ import annotations

from pathlib import Path

from sdft.adapters.formats import LORA_WEIGHT_NAME
from sdft.errors import ConfigError
from sdft.generation.infotext import lora_display_name

MAX_SCANNED = 500  # a scan lists at most this many LoRAs (newest first)


def lora_metadata(path: Path) -> dict[str, str] | None:
    """The metadata of a .safetensors file whose keys name LoRA tensors (not a model's weights), else None; reads
    the header only, through the one reading path (sdft/adapters/lora_file.py)."""
    from sdft.adapters.lora_file import lora_header
    from sdft.errors import LoraFormatError

    try:
        keys, metadata = lora_header(path)
    except LoraFormatError:  # unreadable or not safetensors: not offered
        return None
    return metadata if any("lora" in key.lower() for key in keys) else None


def _folder(folder: str | Path) -> Path:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ConfigError(f"LoRA folder {folder}: no such folder.")
    return root


def find_loras(folder: str | Path) -> list[str]:
    """LoRAs under `folder`, newest first: a run's lora/ (or checkpoint) folder once for its two formats, else files."""
    root = _folder(folder)
    run_folders = {p.parent for p in root.rglob(LORA_WEIGHT_NAME)}
    found: list[Path] = sorted(run_folders)
    for path in sorted(root.rglob("*.safetensors")):
        if path.parent not in run_folders and lora_metadata(path) is not None:
            found.append(path)
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [str(p) for p in found[:MAX_SCANNED]]


def lora_names(folder: str | Path) -> list[tuple[Path, str, str | None]]:
    """Every LoRA file under `folder` (a run's two formats both) as (file, name, alias), newest first: name = the
    file stem (a run's diffusers file: its phase), alias = its `ss_output_name` when it has one."""
    root = _folder(folder)
    found = []
    for path in root.rglob("*.safetensors"):
        header = lora_metadata(path)
        if header is not None:
            alias = header.get("ss_output_name") or None
            found.append((path.stat().st_mtime, path, lora_display_name(path), alias))
    found.sort(key=lambda item: item[0], reverse=True)
    return [(path, name, alias) for _, path, name, alias in found]
