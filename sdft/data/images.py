"""Finding, checking and loading images; the resize/crop/flip transform (PIL + numpy, no torchvision)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from sdft.errors import DataError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under `folder` (by extension, hidden files skipped), sorted for determinism."""
    pattern = "**/*" if recursive else "*"
    return sorted(
        p for p in folder.glob(pattern)
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def find_unreadable(paths: list[Path]) -> list[tuple[Path, str]]:
    """(path, reason) for each file PIL cannot decode."""
    bad = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img.verify()
        except Exception as err:  # PIL raises many types for broken files
            bad.append((path, f"{type(err).__name__}: {err}" if str(err) else type(err).__name__))
    return bad


def collect_images(folder: str | Path, recursive: bool, what: str) -> list[Path]:
    """The readable images of a folder, or a DataError that says what is wrong before any training starts."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DataError(f"{what}: folder {folder} does not exist (relative paths are from {Path.cwd()}).")
    if not folder.is_dir():
        raise DataError(f"{what}: {folder} is a file, not a folder of images.")
    paths = list_images(folder, recursive)
    if not paths:
        others = sorted(p.name for p in folder.iterdir())[:10]
        raise DataError(
            f"{what}: no images in {folder} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}"
            f"{', sub-folders included' if recursive else ''}). Found instead: {others or 'nothing'}."
        )
    bad = find_unreadable(paths)
    if bad:
        listing = "\n".join(f"  {p}: {why}" for p, why in bad)
        raise DataError(f"{what}: {len(bad)} of {len(paths)} images cannot be read; remove or replace them:\n{listing}")
    return paths


def load_rgb(path: Path, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Open an image upright (EXIF orientation applied) as RGB, transparency composited on `background`."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, background + (255,))
            return Image.alpha_composite(canvas, rgba).convert("RGB")
        return img.convert("RGB")


def resize_crop(img: Image.Image, size: int, center: bool, gen: torch.Generator | None = None) -> Image.Image:
    """Resize the short side to `size`, then crop a `size` square (centre or random)."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    if center:
        left, top = (nw - size) // 2, (nh - size) // 2
    else:
        left = int(torch.randint(0, nw - size + 1, (1,), generator=gen))
        top = int(torch.randint(0, nh - size + 1, (1,), generator=gen))
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """HWC uint8 RGB -> CHW float in [-1, 1]."""
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
