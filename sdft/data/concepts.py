"""kohya's dataset naming, shared by plain folders (sdft/data/folders.py) and kohya TOML imports
(sdft/data/kohya_toml.py): `<repeats>_<trigger> <class>` folder names and the `Concept` each image set resolves to."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from sdft.data.captions import CaptionOptions

KOHYA_FOLDER = re.compile(r"^(\d+)_(.+)$")


@dataclass(frozen=True, kw_only=True)
class Concept:
    """One resolved image set (keyword-only). `class_key` pairs instance sets with the class sets of the same class."""

    name: str
    folder: Path
    prompt: str  # for images without a caption file
    trigger: str | None = None  # ensured in every caption
    class_prompt: str | None = None
    class_dir: Path | None = None
    class_key: str | None = None
    repeats: int = 1
    loss_weight: float = 1.0
    caption_extension: str = ".txt"
    captions: CaptionOptions = field(default_factory=CaptionOptions)
    flip: bool = False
    is_reg: bool = False
    recursive: bool = True
    resolution: int | None = None  # this set's training resolution (multi-resolution data); None: data.resolution


def parse_kohya_name(name: str) -> tuple[int, str] | None:
    """'10_sks dog' -> (10, 'sks dog'); None for a plain folder name."""
    match = KOHYA_FOLDER.match(name)
    if not match or not match.group(2).strip():
        return None
    return int(match.group(1)), match.group(2).strip()


def split_tokens(tokens: str) -> tuple[str | None, str]:
    """'sks dog' -> trigger 'sks', class 'dog'; a single word is a class with no trigger."""
    words = tokens.split()
    if len(words) < 2:
        return None, tokens.strip()
    return words[0], " ".join(words[1:])


def class_key_of(text: str | None) -> str | None:
    return " ".join(text.lower().split()) if text else None


def kohya_subfolders(folder: Path) -> list[tuple[Path, int, str]]:
    """(folder, repeats, tokens) for each `<repeats>_<tokens>` sub-folder, sorted by name."""
    if not folder.is_dir():
        return []
    found = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        parsed = parse_kohya_name(sub.name)
        if parsed:
            found.append((sub, *parsed))
    return found
