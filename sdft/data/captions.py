"""Prompts for images: a sidecar caption file when there is one, the concept's prompt otherwise.

Reading happens once, at start (with a report); per-sample processing happens every time a sample is drawn, from
the sample's seeded generator (sdft/data/dataset.py `sample_rng`: a function of seed, epoch, batch and position, so a
resumed run draws the same captions): caption dropout, one of several caption variants (lines of the caption file),
`{a|b|c}` wildcards, tag shuffling and per-tag dropout, the first keep_tokens tags kept in place by all of them.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

from sdft.errors import ConfigError, DataError

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
    images: list[Path], fallback: str, extension: str, use_captions: bool, missing: str = "warn", lines: bool = False
) -> list[str]:
    """One prompt per image (log line says how many came from caption files); see `read_captions_report`."""
    return read_captions_report(images, fallback, extension, use_captions, missing, lines)[0]


def one_line(text: str) -> str:
    return " ".join(text.split())


def caption_text(text: str, lines: bool) -> str:
    """A caption file's text as a prompt: one line; with `lines`, its non-empty lines (variants) joined by newlines."""
    if lines:
        return "\n".join(one_line(t) for t in text.splitlines() if t.strip())
    return one_line(text)


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
    images: list[Path], fallback: str, extension: str, use_captions: bool, missing: str = "warn", lines: bool = False
) -> tuple[list[str], CaptionReport]:
    """Prompts and a report. A caption extension that matches no file while other caption files exist is a loud
    warning (missing="warn") or a DataError (missing="error"). `lines`: each line of a caption file is a variant
    (kept as newline-separated lines of the prompt; `process_caption` draws one)."""
    extension = normalize_extension(extension)
    if not use_captions:
        return [fallback] * len(images), CaptionReport(0, len(images), extension, [])
    prompts, found = [], 0
    for image in images:
        path = caption_path(image, extension)
        text = caption_text(read_caption(path), lines) if path.is_file() else ""
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
    """Prepend the trigger word(s) unless the caption already holds them (each variant line on its own)."""
    if "\n" in caption:
        return "\n".join(ensure_trigger(line, trigger) for line in caption.split("\n"))
    if not trigger or trigger.lower() in caption.lower():
        return caption
    return f"{trigger}, {caption}" if caption else trigger


# `{a|b|c}`: a choice of at least two options, no nested braces (kohya's enable_wildcard syntax)
WILDCARD = re.compile(r"\{([^{}]*\|[^{}]*)\}")


@dataclass(frozen=True)
class CaptionOptions:
    shuffle: bool = False
    keep_tokens: int = 0
    dropout: float = 0.0
    tag_dropout: float = 0.0  # each tag after the first keep_tokens is left out with this probability
    variants: bool = False  # each line of a caption file is one caption; one is drawn per sample
    wildcards: bool = False  # `{a|b|c}` in a caption becomes one of a, b, c per sample

    @property
    def fixed(self) -> bool:
        """The same text every time it is drawn, whatever the caption (text-encoder outputs can be cached)."""
        return self.fixed_per_tag and not self.variants and not self.wildcards

    @property
    def fixed_per_tag(self) -> bool:
        return not self.shuffle and self.dropout <= 0 and self.tag_dropout <= 0

    def fixed_for(self, caption: str) -> bool:
        """The same text every time for this caption: variants and wildcards only vary captions that have them."""
        variants = self.variants and "\n" in caption
        wildcards = self.wildcards and WILDCARD.search(caption) is not None
        return self.fixed_per_tag and not variants and not wildcards


def expand_wildcards(caption: str, rng: random.Random) -> str:
    """Each `{a|b|c}` replaced by one of its options (drawn left to right from `rng`)."""
    return WILDCARD.sub(lambda m: rng.choice(m.group(1).split("|")).strip(), caption)


def process_caption(caption: str, options: CaptionOptions, rng: random.Random) -> str:
    """Caption dropout (empty prompt), then one variant line, wildcards, tag shuffling and per-tag dropout; the first
    keep_tokens tags (after the variant and wildcards are chosen) stay in place and are never dropped."""
    if options.dropout > 0 and rng.random() < options.dropout:
        return ""
    if options.variants and "\n" in caption:
        caption = rng.choice(caption.split("\n"))
    elif "\n" in caption:  # variants off: a multi-line prompt is one caption
        caption = " ".join(caption.split("\n"))
    if options.wildcards:
        caption = expand_wildcards(caption, rng)
    if options.shuffle or options.tag_dropout > 0:
        tags = split_tags(caption)
        keep, rest = tags[: options.keep_tokens], tags[options.keep_tokens :]
        if options.shuffle:
            rng.shuffle(rest)
        if options.tag_dropout > 0:
            rest = [t for t in rest if rng.random() >= options.tag_dropout]
        return ", ".join(keep + rest)
    return caption


def subject_words(
    instance_prompt: str | None,
    class_prompt: str | None,
    trigger: str | None,
    identifier: str | None = None,
    class_noun: str | None = None,
) -> tuple[str, str]:
    """(identifier, class noun): given, else the trigger / the instance prompt's word that the class prompt lacks,
    and the class prompt's last word (`photo of sks dog` + `photo of a dog` -> `sks`, `dog`)."""
    class_words = (class_prompt or "").replace(",", " ").split()
    cls = class_noun or (class_words[-1] if class_words else None)
    ident = identifier or trigger
    if ident is None and instance_prompt:
        extra = [w for w in instance_prompt.replace(",", " ").split() if w not in class_words]
        ident = extra[0] if extra else None
    if not ident or not cls:
        raise ConfigError(
            f"Cannot tell the subject's identifier and class noun from instance prompt {instance_prompt!r} and class "
            f"prompt {class_prompt!r}: set eval.identifier=<token> and eval.class_noun=<noun> (--identifier, --class-noun)."
        )
    return ident, cls
