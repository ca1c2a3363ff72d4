"""A detector for toy-world images: class, main colour, second colour, pattern and background.

Used to measure prompt control of the toy base and, attribute by attribute, whether a generation shows a DreamBooth
subject (sdft/toy/measure.py). No learning, so nothing to ship or retrain: the background is the border's median;
the object is every pixel nearer to an object colour than to the background; its class and facing direction are the
nearest rendered template silhouette. That template's part map (which pixels are main part, second part, spot or
stripe positions), stretched onto the object's bounding box, says where to read each attribute: the main and second
colours are palette votes over their parts (the main one among pixels not in the second colour: they differ in
the world); spots or stripes are present when most of their positions show a colour
other than the main one. The marks (connected groups of second-colour pixels inside the pattern's area) tell three
separate spots from one band (`separate_spots`), which the positions alone do not: a band covers them too.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from sdft.toy.world import (
    BACKGROUNDS,
    CLASSES,
    COLOURS,
    DARK,
    PATTERNS,
    RESOLUTION,
    SKIN,
    SPOT_U,
    SS,
    WINDOW,
    Scene,
    draw_shape,
    object_box,
    random_scene,
    render,
)

TEMPLATE = 16  # silhouettes are compared at 16x16
MIN_PIXELS = 12  # fewer object pixels than this: no object
MIN_MARK = 2  # a second-colour mark on the main part has at least this many pixels
SPOTS = len(SPOT_U)  # the world draws three spots
PATTERN_SHARE = 0.5  # share of spot (stripe) positions off the main colour that counts as spots (stripes)
COLOUR_NAMES = list(COLOURS)
_OBJECT = np.array(
    [COLOURS[n] for n in COLOUR_NAMES] + [tuple(v * WINDOW for v in COLOURS[n]) for n in COLOUR_NAMES] + [SKIN],
    dtype=np.float32,
)  # object colours: the palette, window shades, skin
_DARK = np.array([DARK], dtype=np.float32)  # wheels and doors: neither object (for the box) nor background


@dataclass(frozen=True)
class Detection:
    background: str
    cls: str | None = None  # None: no object found
    colour: str | None = None
    second: str | None = None
    pattern: str | None = None
    flip: bool | None = None
    marks: int | None = None  # separate second-colour marks on the main part: 3 spots, 2 stripes, 1 band, 0 plain

    def attributes(self) -> dict[str, str | None]:
        """The attributes the world captions (flip and marks are not)."""
        d = asdict(self)
        d.pop("flip")
        d.pop("marks")
        return d


def as_array(image) -> np.ndarray:
    """The image as a float (32, 32, 3) array: other sizes (a toy generation at 64 px, an instance photo) are
    box-filtered to the world's 32 px, where the templates are; the detector's part maps assume that size."""
    if not isinstance(image, Image.Image):
        image = np.asarray(image)
        if image.shape[:2] == (RESOLUTION, RESOLUTION):
            return image.astype(np.float32)
        image = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    image = image.convert("RGB")
    if image.size != (RESOLUTION, RESOLUTION):
        image = image.resize((RESOLUTION, RESOLUTION), Image.BOX)
    return np.asarray(image, dtype=np.float32)


def _nearest(pixels: np.ndarray, colours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dist = np.linalg.norm(pixels[..., None, :] - colours, axis=-1)
    return dist.argmin(axis=-1), dist.min(axis=-1)


def background_of(arr: np.ndarray) -> tuple[str, np.ndarray]:
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    median = np.median(border, axis=0)
    names = list(BACKGROUNDS)
    idx, _ = _nearest(median[None], np.array([BACKGROUNDS[n] for n in names], dtype=np.float32))
    return names[int(idx[0])], median


def object_mask(arr: np.ndarray) -> np.ndarray:
    """Pixels nearer to an object colour than to the background (and to the dark details)."""
    _, bg = background_of(arr)
    _, d_obj = _nearest(arr, _OBJECT)
    _, d_other = _nearest(arr, np.concatenate([bg[None].astype(np.float32), _DARK]))
    return d_obj < d_other


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if len(ys) < MIN_PIXELS:
        return None
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def silhouette(mask: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The mask in a square around its box, at TEMPLATE x TEMPLATE (aspect ratio kept)."""
    y0, y1, x0, x1 = box
    cy, cx, side = (y0 + y1) / 2, (x0 + x1) / 2, max(y1 - y0, x1 - x0)
    pad = int(side)  # the square may reach past the image edge: pad with background
    img = Image.fromarray(np.pad(mask, pad).astype(np.uint8) * 255)
    crop = (cx + pad - side / 2, cy + pad - side / 2, cx + pad + side / 2, cy + pad + side / 2)
    return np.asarray(img.resize((TEMPLATE, TEMPLATE), Image.BILINEAR, box=crop), dtype=np.float32) / 255.0


def _code_render(cls: str, flip: bool, pattern: str) -> np.ndarray:
    """The canonical (unjittered) object with pure code colours: main red, second blue, on white."""
    full = RESOLUTION * SS
    img = Image.new("RGB", (full, full), (255, 255, 255))
    draw_shape(ImageDraw.Draw(img), cls, object_box(cls), (255, 0, 0), (0, 0, 255), pattern, flip)
    return np.asarray(img.resize((RESOLUTION, RESOLUTION), Image.BOX), dtype=np.float32)


def _is(arr: np.ndarray, rgb: tuple[int, int, int], tol: float = 40.0) -> np.ndarray:
    return np.linalg.norm(arr - np.array(rgb, dtype=np.float32), axis=-1) < tol


@dataclass(frozen=True)
class Template:
    silhouette: np.ndarray
    box: tuple[int, int, int, int]
    main: np.ndarray  # part maps on the 32x32 canonical image
    second: np.ndarray
    spots: np.ndarray  # positions only spots cover
    stripes: np.ndarray  # positions only stripes cover
    area: np.ndarray  # the pattern's area on the main part, one pixel in from its edge: where marks are counted


@lru_cache(maxsize=len(BACKGROUNDS))
def templates(background: str = "white") -> dict[tuple[str, bool], Template]:
    """Silhouette and part maps of every class facing either way, on `background` (its edges blend with it)."""
    out = {}
    for cls in CLASSES:
        for flip in (False, True):
            arr = as_array(render(Scene(cls, "blue", "yellow", "plain", background, flip), jitter=False))
            mask = object_mask(arr)
            box = _bbox(mask)
            plain, spots, stripes = (_code_render(cls, flip, p) for p in PATTERNS)
            main = _is(plain, (255, 0, 0))
            changed_s = np.abs(spots - plain).sum(-1) > 1
            changed_t = np.abs(stripes - plain).sum(-1) > 1
            out[cls, flip] = Template(
                silhouette(mask, box),
                box,
                main & ~changed_s & ~changed_t,
                _is(plain, (0, 0, 255)),
                main & _is(spots, (0, 0, 255)) & ~changed_t,
                main & _is(stripes, (0, 0, 255)) & ~changed_s,
                _erode(_box_fill(changed_s | changed_t) & (main | changed_s | changed_t)),
            )
    return out


def _warp(part: np.ndarray, src: tuple[int, int, int, int], dst: tuple[int, int, int, int]) -> np.ndarray:
    """A part map of the canonical box `src` stretched onto the box `dst` (nearest neighbour), 32x32."""
    sy0, sy1, sx0, sx1 = src
    dy0, dy1, dx0, dx1 = dst
    ys, xs = np.arange(dy0, dy1), np.arange(dx0, dx1)
    my = np.clip(np.round(sy0 + (ys - dy0 + 0.5) * (sy1 - sy0) / (dy1 - dy0) - 0.5), 0, part.shape[0] - 1).astype(int)
    mx = np.clip(np.round(sx0 + (xs - dx0 + 0.5) * (sx1 - sx0) / (dx1 - dx0) - 0.5), 0, part.shape[1] - 1).astype(int)
    out = np.zeros(part.shape, dtype=bool)
    out[dy0:dy1, dx0:dx1] = part[np.ix_(my, mx)]
    return out


def _erode(mask: np.ndarray) -> np.ndarray:
    """`mask` less every pixel with a 4-neighbour outside it."""
    m = np.pad(mask, 1)
    return mask & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def _box_fill(mask: np.ndarray) -> np.ndarray:
    """The bounding box of `mask`, filled."""
    out = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
    return out


def count_marks(on: np.ndarray, min_pixels: int = MIN_MARK) -> int:
    """Connected groups (4-neighbour) of at least `min_pixels` True pixels in a small boolean map. Hand-written
    (a flood fill over <= 32x32 pixels): the core dependencies have no connected-component labelling (scipy's
    ndimage.label would be one more required package for ten lines)."""
    seen = np.zeros_like(on, dtype=bool)
    count = 0
    for y, x in zip(*np.nonzero(on)):
        if seen[y, x]:
            continue
        seen[y, x], stack, size = True, [(y, x)], 0
        while stack:
            cy, cx = stack.pop()
            size += 1
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < on.shape[0] and 0 <= nx < on.shape[1] and on[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        count += size >= min_pixels
    return count


def _vote(names: np.ndarray, where: np.ndarray) -> int | None:
    picked = names[where]
    return int(np.bincount(picked, minlength=len(COLOUR_NAMES)).argmax()) if picked.size else None


def _locate(arr: np.ndarray):
    """Background, object mask and box, the nearest template (class, flip) and the palette name of each pixel;
    None in place of the box (and after) when there is no object."""
    bg, _ = background_of(arr)
    mask = object_mask(arr)
    box = _bbox(mask)
    if box is None:
        return bg, mask, None, None, None, None
    sil = silhouette(mask, box)
    key, t = min(templates(bg).items(), key=lambda kv: float(np.abs(sil - kv[1].silhouette).mean()))
    names, _ = _nearest(arr, np.array([COLOURS[n] for n in COLOUR_NAMES], dtype=np.float32))
    return bg, mask, box, key, t, names


def detect(image) -> Detection:
    """Every attribute of a toy-world image (class, colours, pattern, background; None where no object is found),
    and the number of separate marks on the main part."""
    bg, mask, box, key, t, names = _locate(as_array(image))
    if box is None:
        return Detection(bg)
    cls, flip = key
    second = _vote(names, _warp(t.second, t.box, box) & mask)
    main = _vote(names, _warp(t.main, t.box, box) & mask & (names != second))  # the world's parts differ in colour
    if main is None or second is None:
        return Detection(bg, cls, None, None, None, flip)
    off_main = names != main
    share = {p: float(off_main[_warp(m, t.box, box)].mean()) for p, m in (("spots", t.spots), ("stripes", t.stripes))}
    best = max(share, key=share.get)
    pattern = best if share[best] >= PATTERN_SHARE else "plain"
    marks = count_marks((names == second) & _warp(t.area, t.box, box) & mask)
    return Detection(bg, cls, COLOUR_NAMES[main], COLOUR_NAMES[second], pattern, flip, marks)


def separate_spots(detection: Detection | dict) -> bool:
    """True when the detection shows spots drawn as the world draws them: three separate marks, not one band."""
    d = asdict(detection) if isinstance(detection, Detection) else detection
    return d["pattern"] == "spots" and d.get("marks") == SPOTS


def band_of(image) -> Image.Image:
    """A synthetic band for validating `separate_spots`: `image` (a spotted object) with the box spanning its
    spots filled in their colour, the spots merged into one band. The image unchanged when it shows no spots."""
    arr = as_array(image)
    bg, mask, box, key, t, names = _locate(arr)
    if box is None:
        return Image.fromarray(arr.astype(np.uint8))
    d = detect(image)
    marked = (names == COLOUR_NAMES.index(d.second)) & _warp(t.area, t.box, box) & mask if d.second else None
    if marked is None or not marked.any():
        return Image.fromarray(arr.astype(np.uint8))
    colour = np.median(arr[marked], axis=0)
    out = arr.copy()
    out[_box_fill(marked)] = colour
    return Image.fromarray(out.astype(np.uint8))


def accuracy(count: int = 400, seed: int = 0) -> dict[str, float]:
    """Per-attribute accuracy of the detector on `count` random world images (jittered, as in the dataset)."""
    rng = random.Random(seed)
    hits: dict[str, list[bool]] = {a: [] for a in ("cls", "colour", "second", "pattern", "background")}
    for i in range(count):
        scene = random_scene(rng)
        found = detect(render(scene, seed=rng.randrange(1 << 30))).attributes()
        for a in hits:
            hits[a].append(found[a] == getattr(scene, a))
    return {a: float(np.mean(v)) for a, v in hits.items()}


def spots_accuracy(count: int = 100, seed: int = 0) -> dict[str, dict[str, float]]:
    """How often `separate_spots` is right, per class, on `count` random world images of each kind: spotted renders
    (should read as spots), their `band_of` images, striped and plain renders (should not)."""
    rng = random.Random(seed)
    hits: dict[str, dict[str, list[bool]]] = {
        c: {k: [] for k in ("spots", "band", "stripes", "plain")} for c in CLASSES
    }
    for _ in range(count):
        base = random_scene(rng)
        render_seed = rng.randrange(1 << 30)
        for pattern in PATTERNS:
            scene = Scene(base.cls, base.colour, base.second, pattern, base.background, base.flip)
            image = render(scene, seed=render_seed)
            hits[base.cls][pattern].append(separate_spots(detect(image)) == (pattern == "spots"))
            if pattern == "spots":
                hits[base.cls]["band"].append(not separate_spots(detect(band_of(image))))
    return {c: {k: float(np.mean(v)) for k, v in h.items() if v} for c, h in hits.items()}


def colour_histogram(image) -> np.ndarray:
    """Share of the object's pixels nearest each world colour (COLOUR_NAMES order); zeros when no object is found.
    Kept for colour-only comparisons (tests/test_toy_embeddings.py); sdft.toy.measure reads every attribute."""
    arr = as_array(image)
    mask = object_mask(arr)
    hist = np.zeros(len(COLOUR_NAMES), dtype=np.float64)
    if mask.sum() < MIN_PIXELS:
        return hist
    names, _ = _nearest(arr[mask], np.array([COLOURS[n] for n in COLOUR_NAMES], dtype=np.float32))
    hist += np.bincount(names, minlength=len(COLOUR_NAMES))
    return hist / mask.sum()


def subject_distance(images, reference) -> float:
    """Mean L1 distance (0..2) between each image's colour histogram and the mean histogram of the `reference`."""
    ref = np.mean([colour_histogram(r) for r in reference], axis=0)
    return float(np.mean([np.abs(colour_histogram(i) - ref).sum() for i in images]))
