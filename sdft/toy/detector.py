"""A simple detector for toy-world images: background, dominant object colour and class (template match).

Used to measure how well prompts control the toy base model and, by colour histograms, how close generations are to
a DreamBooth subject. No learning: the background is the border's median, the object is what differs from it, its
colour is the most common palette colour, its class the nearest rendered template silhouette.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from sdft.toy.world import BACKGROUNDS, CLASSES, COLOURS, Scene, render

TEMPLATE = 16  # silhouettes are compared at 16x16
FG_THRESHOLD = 60.0  # RGB distance from the background that counts as object
PALETTE_NAMES = list(COLOURS) + ["dark"]


@dataclass(frozen=True)
class Detection:
    background: str
    colour: str | None  # None: no object found
    cls: str | None


def _array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    return np.asarray(image, dtype=np.float32)


def _nearest(pixels: np.ndarray, colours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dist = np.linalg.norm(pixels[:, None, :] - colours[None, :, :], axis=-1)
    return dist.argmin(axis=1), dist.min(axis=1)


def background_of(arr: np.ndarray) -> tuple[str, np.ndarray]:
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    median = np.median(border, axis=0)
    names = list(BACKGROUNDS)
    idx, _ = _nearest(median[None], np.array([BACKGROUNDS[n] for n in names], dtype=np.float32))
    return names[int(idx[0])], median


def foreground(arr: np.ndarray) -> np.ndarray:
    """Boolean mask of the pixels that differ clearly from the background."""
    _, bg = background_of(arr)
    return np.linalg.norm(arr - bg, axis=-1) > FG_THRESHOLD


# object colours at full strength and as the darker shades of roofs and windows, plus dark details
_PALETTE = [(n, np.array(c) * f) for n, c in COLOURS.items() for f in (1.0, 0.6)]
_PALETTE.append(("dark", np.array((50, 50, 55))))


def colour_histogram(image) -> np.ndarray:
    """Share of the object's pixels per palette colour (PALETTE_NAMES order); zeros when no object is found."""
    arr = _array(image)
    mask = foreground(arr)
    hist = np.zeros(len(PALETTE_NAMES), dtype=np.float64)
    if not mask.any():
        return hist
    idx, _ = _nearest(arr[mask], np.array([c for _, c in _PALETTE], dtype=np.float32))
    for i in idx:
        hist[PALETTE_NAMES.index(_PALETTE[int(i)][0])] += 1
    return hist / mask.sum()


def silhouette(mask: np.ndarray) -> np.ndarray | None:
    """The mask cropped to a square around its bounding box, at TEMPLATE x TEMPLATE (aspect ratio kept)."""
    ys, xs = np.nonzero(mask)
    if len(ys) < 4:
        return None
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    pad = int(side)  # the square may reach past the image edge: pad with background
    img = Image.fromarray(np.pad(mask, pad).astype(np.uint8) * 255)
    box = (cx + pad - side / 2, cy + pad - side / 2, cx + pad + side / 2, cy + pad + side / 2)
    return np.asarray(img.resize((TEMPLATE, TEMPLATE), Image.BILINEAR, box=box), dtype=np.float32) / 255.0


@lru_cache(maxsize=1)
def templates() -> dict[str, list[np.ndarray]]:
    """Silhouettes of every class, both facing directions, both sizes, on white."""
    out: dict[str, list[np.ndarray]] = {c: [] for c in CLASSES}
    for cls in CLASSES:
        for flip in (False, True):
            for size in ("small", "big"):
                out[cls].append(silhouette(foreground(_array(render(Scene(cls, "blue", "white", size, "middle", flip))))))
    return out


def detect(image) -> Detection:
    """Background, dominant colour and class of a toy-world image."""
    arr = _array(image)
    bg, _ = background_of(arr)
    mask = foreground(arr)
    sil = silhouette(mask)
    if sil is None:
        return Detection(bg, None, None)
    hist = colour_histogram(arr)[: len(COLOURS)]
    colour = list(COLOURS)[int(hist.argmax())] if hist.sum() > 0 else None
    scores = {cls: min(float(np.abs(sil - t).mean()) for t in ts) for cls, ts in templates().items()}
    return Detection(bg, colour, min(scores, key=scores.get))


def subject_distance(images, reference) -> float:
    """Mean L1 distance between each image's colour histogram and the mean histogram of the `reference` images."""
    ref = np.mean([colour_histogram(r) for r in reference], axis=0)
    return float(np.mean([np.abs(colour_histogram(i) - ref).sum() for i in images]))


def palette_distance(images, reference) -> float:
    """L1 distance (0..2) between the mean colour histograms of two sets of images: how differently coloured the
    sets are as a whole (two sets of varied dogs drawn alike are close even when image i and image i differ)."""
    return float(np.abs(np.mean([colour_histogram(i) for i in images], axis=0)
                        - np.mean([colour_histogram(r) for r in reference], axis=0)).sum())
