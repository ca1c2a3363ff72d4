"""Prompts for images: a sidecar caption file when there is one, the concept's prompt otherwise.

Reading happens once, at start (with a report); per-sample processing (trigger word, tag shuffling with
keep_tokens, caption dropout) happens every time a sample is drawn, from a seeded generator.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from sdft.errors import DataError

log = logging.getLogger(__name__)

KNOWN_CAPTION_EXTENSIONS = (".txt", ".caption")


def normalize_extension(extension: str) -> str:
    return extension if extension.startswith(".") else f".{extension}"


def caption_path(image: Path, extension: str) -> Path:
    return image.with_name(image.stem + normalize_extension(extension))


@dataclass
class CaptionReport:
    found: int
    total: int
    extension: str
    others: list[str]  # other caption extensions present next to the images

    def line(self) -> str:
        return f"{self.found} of {self.total} images have a {self.extension} caption"


def read_captions(
    images: list[Path], fallback: str, extension: str, use_captions: bool, missing: str = "warn"
) -> list[str]:
    """One prompt per image (log line says how many came from caption files); see `read_captions_report`."""
    return read_captions_report(images, fallback, extension, use_captions, missing)[0]


def read_caption(path: Path) -> str:
    """A caption file's text: UTF-8, else (with a warning naming the file) Windows-1252, the usual other encoding."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        log.warning(
            "Caption %s is not UTF-8: read as Windows-1252 (%r). Save it as UTF-8 to be sure it is read as meant.",
            path,
            data.decode("cp1252", errors="replace")[:80],
        )
        return data.decode("cp1252", errors="replace")


def read_captions_report(
    images: list[Path], fallback: str, extension: str, use_captions: bool, missing: str = "warn"
) -> tuple[list[str], CaptionReport]:
    """Prompts and a report. A caption extension that matches no file while other caption files exist is a loud
    warning (missing="warn") or a DataError (missing="error")."""
    extension = normalize_extension(extension)
    if not use_captions:
        return [fallback] * len(images), CaptionReport(0, len(images), extension, [])
    prompts, found = [], 0
    for image in images:
        path = caption_path(image, extension)
        text = read_caption(path).strip() if path.is_file() else ""
        text = " ".join(text.split())  # one line
        found += bool(text)
        prompts.append(text or fallback)
    others = sorted(
        {e for e in KNOWN_CAPTION_EXTENSIONS if e != extension for i in images if caption_path(i, e).is_file()}
    )
    report = CaptionReport(found, len(images), extension, others)
    log.info("Captions: %s; the others use %r.", report.line(), fallback)
    if found == 0 and others and images:
        message = (
            f"No {extension} caption files next to {len(images)} images in {images[0].parent}, but "
            f"{', '.join(others)} files exist: set data.caption_extension={others[0]} (or caption_extension "
            "in the concept / kohya subset)."
        )
        if missing == "error":
            raise DataError(message)
        log.warning("!!! %s Training on the fallback prompt %r instead.", message, fallback)
    return prompts, report


def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def ensure_trigger(caption: str, trigger: str | None) -> str:
    """Prepend the trigger word(s) unless the caption already holds them."""
    if not trigger or trigger.lower() in caption.lower():
        return caption
    return f"{trigger}, {caption}" if caption else trigger


@dataclass(frozen=True)
class CaptionOptions:
    shuffle: bool = False
    keep_tokens: int = 0
    dropout: float = 0.0

    @property
    def fixed(self) -> bool:
        """The same text every time it is drawn (text-encoder outputs can be cached)."""
        return not self.shuffle and self.dropout <= 0


def process_caption(caption: str, options: CaptionOptions, rng: random.Random) -> str:
    """Caption dropout (empty prompt), then tag shuffling keeping the first keep_tokens tags in place."""
    if options.dropout > 0 and rng.random() < options.dropout:
        return ""
    if options.shuffle:
        tags = split_tags(caption)
        keep, rest = tags[: options.keep_tokens], tags[options.keep_tokens :]
        rng.shuffle(rest)
        return ", ".join(keep + rest)
    return caption
