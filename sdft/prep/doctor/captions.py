"""Captions: missing, missing the trigger, longer than the text encoder's 77 tokens (and what gets cut), the same
words in every caption (they bind to the trigger), identical captions. Text only: cheap, run at training start.

Token counts: with a tokenizer (`--tokenizer`, a CLIP tokenizer folder or hub id in the local cache), exact; without
one, CLIP's own pre-tokenization (words, digits, punctuation) counted, which is a lower bound of the BPE tokens, so a
caption reported as too long is too long."""

from __future__ import annotations

import re
from collections import Counter

from sdft.data.concepts import split_tokens
from sdft.prep.doctor.findings import Finding, Item, Severity
from sdft.prep.doctor.inputs import DoctorData

MAX_TOKENS = 75  # CLIP's 77 positions minus the start and end tokens
MIN_SET = 3  # captions needed before "the same words in every caption" means anything
# CLIP's pre-tokenizer pattern (transformers' CLIPTokenizer, ASCII letters instead of \p{L})
PIECES = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-zA-Z\u00c0-\uffff]+|[0-9]|[^\sa-zA-Z0-9]+", re.IGNORECASE)
WORD = re.compile(r"[a-z][a-z'-]+")
GLUE = set(
    "a an the of in on at with and or to for from by as is are his her their its photo picture image shot "
    "close up closeup portrait looking wearing".split()
)


class TokenCounter:
    """Counts a caption's tokens and says what falls beyond the limit."""

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer
        self.exact = tokenizer is not None

    def pieces(self, text: str) -> list[str]:
        if self.tokenizer is not None:
            return self.tokenizer.tokenize(text)
        return PIECES.findall(text.lower())

    def cut(self, text: str) -> tuple[int, str]:
        """(token count, the text beyond MAX_TOKENS: what the text encoder never sees)."""
        pieces = self.pieces(text)
        if len(pieces) <= MAX_TOKENS:
            return len(pieces), ""
        if self.tokenizer is not None:
            ids = self.tokenizer.convert_tokens_to_ids(pieces[MAX_TOKENS:])
            return len(pieces), self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        matches = list(PIECES.finditer(text.lower()))
        return len(pieces), text[matches[MAX_TOKENS].start() :].strip()


def load_tokenizer(name: str | None):
    """A CLIP tokenizer from a folder (a model folder with tokenizer/ too) or a hub id already in the local cache."""
    if not name:
        return None
    from pathlib import Path

    from transformers import CLIPTokenizer

    from sdft.errors import ConfigError

    path = Path(name).expanduser()
    if (path / "tokenizer").is_dir():
        path = path / "tokenizer"
    if path.exists() and not any((path / f).is_file() for f in ("vocab.json", "tokenizer.json")):
        raise ConfigError(f"--tokenizer {name}: no CLIP tokenizer there (no vocab.json / tokenizer.json).")
    try:
        return CLIPTokenizer.from_pretrained(str(path) if path.exists() else name, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"--tokenizer {name}: no CLIP tokenizer there ({str(err).splitlines()[0]}).") from None


def trigger_words(item: Item) -> set[str]:
    c = item.concept
    words = set()
    for text in (c.trigger, c.class_prompt, c.prompt) if c else ():
        words |= set(WORD.findall((text or "").lower()))
    if c and c.prompt:
        trigger, _ = split_tokens(c.prompt)
        words |= {trigger.lower()} if trigger else set()
    return words


def check(data: DoctorData, counter: TokenCounter | None = None) -> list[Finding]:
    counter = counter or TokenCounter()
    out = []
    by_concept: dict[str, list[Item]] = {}
    for item in data.instances:
        by_concept.setdefault(item.name, []).append(item)
    ensure = bool(data.settings.ensure_trigger)
    for name, items in by_concept.items():
        concept = items[0].concept
        captioned = [i for i in items if i.caption]
        missing = [i for i in items if not i.caption]
        if captioned and missing:
            out.append(
                Finding(
                    "captions",
                    Severity.warn,
                    f"{name}: {len(missing)} of {len(items)} images have no caption and train on the prompt "
                    f"{items[0].concept.prompt if concept else ''!r}",
                    f"write a caption file ({concept.caption_extension if concept else '.txt'}) for each, "
                    "e.g. with sdft data caption",
                    [i.path for i in missing],
                )
            )
        trigger = concept.trigger if concept else None
        if trigger:
            lacking = [i for i in items if trigger.lower() not in i.prompt.lower()]
            if lacking:
                out.append(
                    Finding(
                        "trigger",
                        Severity.severe,
                        f"{name}: {len(lacking)} caption(s) lack the trigger {trigger!r}"
                        + ("" if ensure else " and data.ensure_trigger is off"),
                        f"add {trigger!r} to them (or set data.ensure_trigger=true)",
                        [i.path for i in lacking],
                    )
                )
        elif captioned:
            out.append(
                Finding(
                    "trigger",
                    Severity.info,
                    f"{name}: no trigger word is set, so captions are used as written",
                    "set data.trigger (or name the folder `<repeats>_<trigger> <class>`) if the LoRA should answer "
                    "to a word",
                    [],
                )
            )
        for item in items:
            count, cut = counter.cut(item.prompt)
            if cut:
                out.append(
                    Finding(
                        "caption length",
                        Severity.warn,
                        f"{item.path.name}: caption is {'' if counter.exact else 'at least '}{count} tokens; the text "
                        f"encoder sees {MAX_TOKENS}, this is cut: {cut[:120]!r}",
                        "shorten it: put what matters first",
                        [item.path],
                        {"tokens": count, "cut": cut},
                    )
                )
        if len(captioned) >= MIN_SET:
            own = trigger_words(items[0])
            words = [set(WORD.findall(i.caption.lower())) - GLUE - own for i in captioned]
            common = sorted(set.intersection(*words))
            if common:
                out.append(
                    Finding(
                        "caption words",
                        Severity.warn,
                        f"{name}: every caption says {', '.join(repr(w) for w in common)}: not described per image, "
                        "these bind to the trigger (the LoRA will add them without being asked)",
                        "remove them from the captions if they are part of the subject (e.g. its hair colour), keep "
                        "them in only some captions if they are not",
                        [i.path for i in captioned],
                        {"words": common},
                    )
                )
            same = Counter(i.caption for i in captioned)
            for text, n in same.items():
                group = [i.path for i in captioned if i.caption == text]
                if n > 1 and not any(set(group) <= set(d) for d in data.report.duplicates):  # copies: one finding
                    out.append(
                        Finding(
                            "caption identical",
                            Severity.warn if n > len(captioned) / 2 else Severity.info,
                            f"{name}: {n} images share the caption {text[:80]!r}",
                            "describe what differs between them (pose, place, clothes, light)",
                            group,
                        )
                    )
    return out
