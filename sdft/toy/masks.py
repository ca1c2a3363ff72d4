"""Generated loss masks from the toy detector, and the toy subject pasted on busy backgrounds (issue 14, items 2 and 6c).

- `subject_mask(image)`: the detector's object mask (pixels nearer a world object colour than the plain background)
  as an 8-bit mask, 255 = subject; `write_masks(folder)` writes `<stem>.mask.png` beside every image, the name
  `loss.masked_loss` reads (sdft/data/masks.py).
- `write_busy_subject(src, out)`: each plain-background subject image pasted, through its generated mask, onto a busy
  background (random tiles of world colours: a background the toy world never draws), with that mask beside it.
- `is_busy(image)`: whether an image's border is not one plain world background (what "the busy background leaked
  into a generation" counts as).

    sdft toy masks datasets/toy_subject --busy outputs/toy_subject_busy
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sdft.data.images import MASK_SUFFIX, list_images
from sdft.errors import DataError
from sdft.toy.detector import as_array, background_of, object_mask
from sdft.toy.world import BACKGROUNDS, COLOURS, DARK, RESOLUTION

TILE = 4  # busy background: TILE x TILE pixel tiles
TILE_COLOURS = [*COLOURS.values(), *BACKGROUNDS.values(), DARK]
OFF_BACKGROUND = 60.0  # a border pixel this far (RGB distance) from the plain background is "not background"
BUSY_SHARE = 0.5  # an image whose border has more such pixels than this share is busy


def subject_mask(image) -> Image.Image:
    """The toy detector's object mask of a plain-background world image, as mode-L (255 = subject, 0 = background).
    Fails on an image where it finds no object (a mask of nothing would silently drop the image from the loss)."""
    mask = object_mask(as_array(image))
    if mask.sum() < 12:
        raise DataError(
            "The toy detector finds no object in this image: generated masks need a toy-world subject "
            "on a plain background (datasets/make_toy_subject.py)."
        )
    # fill holes (anti-aliased spot edges can read as background): flood the outside from a padded corner with PIL
    padded = Image.fromarray(np.pad(mask, 1).astype(np.uint8) * 255, mode="L").copy()  # a copy: writable
    ImageDraw.floodfill(padded, (0, 0), 128)
    outside = np.asarray(padded)[1:-1, 1:-1] == 128
    return Image.fromarray((~outside).astype(np.uint8) * 255, mode="L")


def write_masks(folder: str | Path) -> list[Path]:
    """`<stem>.mask.png` beside every image in `folder`, from `subject_mask`; the written paths."""
    images = list_images(Path(folder))
    if not images:
        raise DataError(f"No images in {folder} to generate masks for.")
    written = []
    for path in images:
        with Image.open(path) as im:
            mask = subject_mask(im.convert("RGB"))
        out = path.with_name(path.stem + MASK_SUFFIX)
        mask.save(out)
        written.append(out)
    return written


def busy_background(seed: int, size: int = RESOLUTION) -> Image.Image:
    """Random TILE-pixel tiles of world colours (object colours, backgrounds, dark): no plain background."""
    rng = random.Random(seed)
    n = -(-size // TILE)
    tiles = np.array([[rng.choice(TILE_COLOURS) for _ in range(n)] for _ in range(n)], dtype=np.uint8)
    return Image.fromarray(np.kron(tiles, np.ones((TILE, TILE, 1), dtype=np.uint8))[:size, :size], mode="RGB")


def write_busy_subject(src: str | Path, out: str | Path, seed: int = 0) -> list[Path]:
    """Every image of `src` pasted through its generated mask onto a busy background (seeded per image) in `out`,
    with the mask beside it (`<stem>.mask.png`); the written images. Captions (`.txt`) are copied."""
    src, out = Path(src), Path(out)
    images = list_images(src)
    if not images:
        raise DataError(f"No images in {src} to paste onto busy backgrounds.")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, path in enumerate(images):
        with Image.open(path) as im:
            image = im.convert("RGB")
        mask = subject_mask(image)
        composite = busy_background(seed * 1000 + i, image.size[0])
        composite.paste(image, (0, 0), mask)
        composite.save(out / f"{path.stem}.png")
        mask.save(out / f"{path.stem}{MASK_SUFFIX}")
        caption = path.with_suffix(".txt")
        if caption.is_file():
            (out / caption.name).write_bytes(caption.read_bytes())
        written.append(out / f"{path.stem}.png")
    return written


def is_busy(image) -> bool:
    """True when more than BUSY_SHARE of the border pixels are far from the plain background the border reads as."""
    arr = as_array(image)
    name, _ = background_of(arr)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    far = np.linalg.norm(border - np.array(BACKGROUNDS[name], dtype=np.float32), axis=-1) > OFF_BACKGROUND
    return bool(far.mean() > BUSY_SHARE)


if __name__ == "__main__":  # the command line moved to sdft/cli/ (issue 27)
    from sdft.errors import command_moved

    command_moved("sdft.toy.masks", "sdft toy masks")
