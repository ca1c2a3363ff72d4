"""What the doctor reports: findings (per image or per set) with a severity and what to do, and the scanned items."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from sdft.data.concepts import Concept


class Severity(IntEnum):
    """severe: will likely spoil the LoRA or stop training (`--strict` exits 1); warn: worth a look; info: a fact."""

    info = 0
    warn = 1
    severe = 2


@dataclass
class Finding:
    """One problem: which check found it, how bad, what is wrong, what to do, and the images it concerns (a cluster of
    near-duplicates or identical captions is one finding naming all of them)."""

    check: str
    severity: Severity
    message: str
    advice: str
    files: list[Path] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    def line(self) -> str:
        return f"[{self.severity.name.upper():6}] {self.check}: {self.message} -> {self.advice}"

    def to_dict(self) -> dict:
        return {
            "check": self.check,
            "severity": self.severity.name,
            "message": self.message,
            "advice": self.advice,
            "files": [str(p) for p in self.files],
            "data": self.data,
        }


def worst_first(findings: list[Finding]) -> list[Finding]:
    """Most severe first; within a severity, by check, then by first file (a stable order for reports and tests)."""
    return sorted(findings, key=lambda f: (-f.severity, f.check, str(f.files[0]) if f.files else ""))


@dataclass(frozen=True)
class Item:
    """One image as training would see it: its concept, prompt (trigger ensured), caption file text (None: no caption
    file), upright size and the bucket it trains at."""

    path: Path
    concept: Concept | None
    prompt: str
    caption: str | None
    size: tuple[int, int]
    bucket: tuple[int, int]
    is_reg: bool = False

    @property
    def name(self) -> str:
        return self.concept.name if self.concept else self.path.parent.name
