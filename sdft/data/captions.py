"""Prompts for images: a sidecar caption file when there is one, the configured prompt otherwise."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def caption_path(image: Path, extension: str) -> Path:
    ext = extension if extension.startswith(".") else f".{extension}"
    return image.with_suffix(ext)


def read_captions(images: list[Path], fallback: str, extension: str, use_captions: bool) -> list[str]:
    """One prompt per image, and a log line saying how many came from caption files."""
    if not use_captions:
        return [fallback] * len(images)
    prompts, found = [], 0
    for image in images:
        path = caption_path(image, extension)
        text = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
        found += bool(text)
        prompts.append(text or fallback)
    log.info("Captions: %d of %d images have a %s caption; the others use %r.", found, len(images), extension, fallback)
    if found == 0 and any(caption_path(i, e).is_file() for i in images for e in (".txt", ".caption")):
        log.warning(
            "No %s caption files, but other caption files exist next to the images: set data.caption_extension.",
            extension,
        )
    return prompts
