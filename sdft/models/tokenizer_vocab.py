"""A small CLIP-format BPE vocabulary built in code, so the tiny model needs no download.

Layout follows OpenAI CLIP: the 256 byte-unicode characters, the same with ``</w>``, then one
entry per merge, then ``<|startoftext|>`` and ``<|endoftext|>``. Merges are added so that every
word of :data:`PROMPT_WORDS` becomes one token; any other word falls back to smaller pieces.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
MODEL_MAX_LENGTH = 77

# Letters only: CLIP's pre-tokenizer splits "close-up" into "close", "-", "up".
PROMPT_WORDS: tuple[str, ...] = (
    # articles, prepositions, glue
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "with",
    "and",
    "at",
    "by",
    "for",
    "from",
    "to",
    "as",
    "is",
    "very",
    "wearing",
    "holding",
    "looking",
    "next",
    "near",
    "under",
    "behind",
    "front",
    # subjects
    "photo",
    "photograph",
    "picture",
    "image",
    "person",
    "man",
    "woman",
    "boy",
    "girl",
    "child",
    "people",
    "baby",
    "dog",
    "cat",
    "puppy",
    "kitten",
    "bird",
    "horse",
    "car",
    "house",
    "face",
    "portrait",
    "headshot",
    "selfie",
    "close",
    "up",
    "half",
    "full",
    "body",
    "shot",
    "sks",
    "ohwx",
    "character",
    "toy",
    "plushie",
    "robot",
    "backpack",
    "sneaker",
    "teapot",
    "vase",
    "bowl",
    "clock",
    "candle",
    "boots",
    "bag",
    "can",
    "statue",
    "building",
    "castle",
    "bike",
    # colours
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "black",
    "white",
    "pink",
    "brown",
    "gray",
    "grey",
    "golden",
    "silver",
    "colorful",
    # attributes
    "big",
    "small",
    "tiny",
    "large",
    "old",
    "young",
    "cute",
    "happy",
    "sad",
    "beautiful",
    "handsome",
    "standing",
    "sitting",
    "walking",
    "running",
    "smiling",
    "smile",
    "laughing",
    "long",
    "short",
    "hair",
    "blonde",
    "brunette",
    "curly",
    "beard",
    "eyes",
    "hands",
    # places and scenes
    "background",
    "beach",
    "forest",
    "city",
    "snow",
    "park",
    "street",
    "room",
    "kitchen",
    "garden",
    "desert",
    "mountain",
    "mountains",
    "lake",
    "river",
    "ocean",
    "sea",
    "sky",
    "water",
    "field",
    "road",
    "bridge",
    "tree",
    "trees",
    "flower",
    "flowers",
    "grass",
    "table",
    "chair",
    "bed",
    "window",
    "door",
    "wall",
    "floor",
    "studio",
    "office",
    "cafe",
    "space",
    "moon",
    "sun",
    "sunset",
    "sunrise",
    "night",
    "day",
    "rain",
    "fog",
    "winter",
    "summer",
    "autumn",
    "spring",
    "indoor",
    "outdoor",
    "outdoors",
    # clothing and objects
    "hat",
    "glasses",
    "sunglasses",
    "shirt",
    "jacket",
    "dress",
    "suit",
    "tie",
    "coat",
    "hoodie",
    "sweater",
    "jeans",
    "scarf",
    "helmet",
    "book",
    "cup",
    "coffee",
    # styles and quality
    "painting",
    "drawing",
    "style",
    "art",
    "artwork",
    "anime",
    "cartoon",
    "sketch",
    "oil",
    "watercolor",
    "digital",
    "illustration",
    "render",
    "realistic",
    "photorealistic",
    "cinematic",
    "vintage",
    "film",
    "grain",
    "high",
    "quality",
    "best",
    "masterpiece",
    "detailed",
    "highly",
    "ultra",
    "sharp",
    "focus",
    "soft",
    "light",
    "lighting",
    "dark",
    "natural",
    "dramatic",
    "professional",
    "dslr",
    "bokeh",
    "lens",
    "mm",
    "camera",
    "angle",
    "view",
    "side",
    "top",
    "wide",
    "centered",
    "raw",
    "hd",
    # negative-prompt words
    "blurry",
    "blur",
    "low",
    "lowres",
    "bad",
    "anatomy",
    "ugly",
    "deformed",
    "disfigured",
    "worst",
    "jpeg",
    "artifacts",
    "watermark",
    "text",
    "signature",
    "cropped",
    "out",
    "frame",
    "extra",
    "fingers",
    "missing",
    "noisy",
    "duplicate",
    "mutated",
    "poorly",
    "drawn",
)


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 map from each byte to a printable unicode character."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _word_symbols(word: str) -> list[str]:
    """Split a word into byte-unicode symbols, the last carrying ``</w>``."""
    byte_map = bytes_to_unicode()
    symbols = [byte_map[b] for b in word.encode("utf-8")]
    symbols[-1] += END_OF_WORD
    return symbols


def bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply rank-ordered BPE merges to one word, as CLIP does."""
    symbols = _word_symbols(word)
    while len(symbols) > 1:
        pairs = {(a, b) for a, b in zip(symbols, symbols[1:]) if (a, b) in ranks}
        if not pairs:
            break
        first, second = min(pairs, key=ranks.__getitem__)
        merged: list[str] = []
        i = 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == (first, second):
                merged.append(first + second)
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def build_merges(words: tuple[str, ...] = PROMPT_WORDS) -> list[tuple[str, str]]:
    """Merges that turn each word into one token, added left to right.

    A merge is appended (lowest priority) only while the word is still split, so later
    merges never change how earlier words tokenize; the order is fully deterministic.
    """
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        symbols = bpe(word, ranks)
        while len(symbols) > 1:
            ranks[(symbols[0], symbols[1])] = len(ranks)
            symbols = bpe(word, ranks)
    return list(ranks)


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP-ordered vocabulary: bytes, bytes with ``</w>``, merges, then special tokens."""
    base = list(bytes_to_unicode().values())
    tokens = base + [c + END_OF_WORD for c in base] + [a + b for a, b in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: i for i, token in enumerate(tokens)}


def build_clip_tokenizer(words: tuple[str, ...] = PROMPT_WORDS) -> CLIPTokenizer:
    """An offline CLIP tokenizer (pad = ``<|endoftext|>``, max length 77) as in SD 1.5."""
    merges = build_merges(words)
    return CLIPTokenizer(
        vocab=build_vocab(merges),
        merges=merges,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=MODEL_MAX_LENGTH,
    )


def write_vocab_files(directory: str | os.PathLike, words: tuple[str, ...] = PROMPT_WORDS) -> None:
    """Write ``vocab.json`` and ``merges.txt`` (the classic CLIP files) into ``directory``."""
    directory = Path(directory)
    merges = build_merges(words)
    (directory / "vocab.json").write_text(json.dumps(build_vocab(merges), ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
