"""Finding, checking and loading images; the resize/crop transform (PIL + numpy, no torchvision).

Loading rules: EXIF orientation applied; RGBA/LA/PA/P-with-transparency composited on a background colour;
grayscale, CMYK and 16-bit/float images converted to 8-bit RGB; huge JPEGs decoded at a reduced scale (PIL draft)
and other huge images reduced by an integer factor right after decoding, so memory stays bounded.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from sdft.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
# Files that are expected next to images and are not reported as "ignored".
SIDECAR_EXTENSIONS = {".txt", ".caption", ".json", ".toml", ".yaml", ".yml", ".npz"}
SIDECAR_NAMES = {"readme.md"}  # other .md files (notes.md...) are reported as ignored
# Image files sdft writes beside a dataset, never trained on: `sdft data check`'s preview (older versions wrote it
# into the dataset) and masked-loss masks `<stem>.mask.png` (see is_sdft_file).
SDFT_PREVIEWS = {"data_check.png"}


def is_sdft_file(path: Path) -> bool:
    """sdft's own preview, or a mask `<stem>.mask.<image ext>`: not a training image."""
    name = path.name.lower()
    return name in SDFT_PREVIEWS or Path(name).stem.endswith(".mask")


def _files(folder: Path, recursive: bool) -> list[Path]:
    """Everything under `folder`; a folder that cannot be read is a DataError naming it (not a raw OSError)."""
    try:
        return list(folder.glob("**/*" if recursive else "*"))
    except OSError as err:
        raise DataError(
            f"{folder}: cannot read {err.filename or folder} ({err.strerror or err}). Point the data "
            "setting at a folder of images you can read (or set data.recursive=false)."
        ) from None


MASK_SUFFIX = ".mask.png"  # `<stem>.mask.png` beside an image is its loss mask (sdft/data/masks.py), not an image


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under `folder` (by extension, hidden files, masks and sdft's previews skipped), sorted."""
    return sorted(
        p
        for p in _files(folder, recursive)
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not p.name.startswith(".")
        and not is_sdft_file(p)
        and not any(part.startswith(".") for part in p.relative_to(folder).parts[:-1])
    )


def list_ignored(folder: Path, recursive: bool = True) -> list[Path]:
    """Files that are neither images nor expected sidecars: reported, so nothing is dropped silently."""
    return sorted(
        p
        for p in _files(folder, recursive)
        if p.is_file()
        and not p.name.startswith(".")
        and p.name.lower() not in SIDECAR_NAMES
        and (p.suffix.lower() not in IMAGE_EXTENSIONS | SIDECAR_EXTENSIONS or p.name.lower() in SDFT_PREVIEWS)
        and not any(part.startswith(".") for part in p.relative_to(folder).parts[:-1])
    )


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes (cache keys and duplicate detection)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_image(path: Path) -> tuple[int, int] | str:
    """The upright (w, h) of a readable image, or why it cannot be read."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            size = img.size
            if img.format == "JPEG":
                img.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))  # fast full decode at 1/8 scale
            img.load()  # catches truncated data that verify() does not
            orientation = img.getexif().get(0x0112, 1)
        return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size
    except Image.DecompressionBombError as err:
        return f"too many pixels ({err})"
    except Exception as err:  # PIL raises many types for broken files
        return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


@dataclass
class ImageScan:
    """What a set of image files holds: readable sizes, problems by file, duplicates."""

    sizes: dict[Path, tuple[int, int]] = field(default_factory=dict)
    bad: list[tuple[Path, str]] = field(default_factory=list)
    duplicates: list[list[Path]] = field(default_factory=list)
    digests: dict[Path, str] = field(default_factory=dict)

    @property
    def good(self) -> list[Path]:
        return list(self.sizes)


def _scan_one(path: Path) -> tuple[tuple[int, int] | str, str | None]:
    """(upright size or why unreadable, sha256). No memo: a run scans each phase's folders once (data/phase_data.py)."""
    result = check_image(path)
    return result, None if isinstance(result, str) else file_digest(path)


def scan_images(paths: list[Path]) -> ImageScan:
    scan = ImageScan()
    by_digest: dict[str, list[Path]] = {}
    for path in paths:
        result, digest = _scan_one(path)
        if isinstance(result, str):
            scan.bad.append((path, result))
            continue
        scan.sizes[path] = result
        scan.digests[path] = digest
        by_digest.setdefault(digest, []).append(path)
    scan.duplicates = [group for group in by_digest.values() if len(group) > 1]
    return scan


def handle_bad(bad: list[tuple[Path, str]], total: int, what: str, on_bad: str = "error") -> None:
    """on_bad=error: raise with every bad file named; skip: warn with the same list."""
    if not bad:
        return
    listing = "\n".join(f"  {p}: {why}" for p, why in bad)
    if on_bad == "skip":
        log.warning("%s: skipping %d of %d images that cannot be read:\n%s", what, len(bad), total, listing)
        return
    if on_bad != "error":
        raise DataError(f"data.on_bad_images must be 'error' or 'skip', not {on_bad!r}.")
    raise DataError(
        f"{what}: {len(bad)} of {total} images cannot be read; remove or replace them "
        f"(or set data.on_bad_images=skip to train without them):\n{listing}"
    )


def check_folder(folder: str | Path, what: str) -> Path:
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DataError(f"{what}: folder {folder} does not exist (relative paths are from {Path.cwd()}).")
    if not folder.is_dir():
        raise DataError(f"{what}: {folder} is a file, not a folder of images.")
    if folder.resolve() == Path(folder.resolve().anchor):  # scanning a whole file system (and /proc) is never meant
        raise DataError(f"{what}: {folder} is the file system's root; point it at the folder that holds your images.")
    return folder


def no_images_error(folder: Path, recursive: bool, what: str) -> DataError:
    others = sorted(p.name for p in folder.iterdir())[:10]
    return DataError(
        f"{what}: no images in {folder} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}"
        f"{', sub-folders included' if recursive else ''}). Found instead: {others or 'nothing'}."
    )


def collect_images(folder: str | Path, recursive: bool, what: str, on_bad: str = "error") -> list[Path]:
    """The readable images of a folder, or a DataError that says what is wrong before any training starts."""
    folder = check_folder(folder, what)
    paths = list_images(folder, recursive)
    if not paths:
        raise no_images_error(folder, recursive, what)
    scan = scan_images(paths)
    handle_bad(scan.bad, len(paths), what, on_bad)
    report_duplicates(scan.duplicates, what)
    if not scan.good:
        raise DataError(f"{what}: none of the {len(paths)} images in {folder} can be read.")
    return scan.good


def report_duplicates(duplicates: list[list[Path]], what: str) -> None:
    for group in duplicates:
        log.warning(
            "%s: identical files (same bytes, trained on as separate images): %s",
            what,
            ", ".join(str(p) for p in group),
        )


def _to_8bit_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # 16-bit / 32-bit grayscale: scale to 0..255
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        if mode == "F" and arr.max() <= 1.0:
            top = 1.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, P without transparency, RGB


def load_rgb(
    path: Path, background: tuple[int, int, int] = (255, 255, 255), target: tuple[int, int] | None = None
) -> Image.Image:
    """Open an image upright (EXIF orientation applied) as 8-bit RGB, transparency composited on `background`.

    `target` (w, h): the size it will be resized to. Huge images are then decoded/reduced to no less than twice
    that size (JPEG: PIL draft, decoding at 1/2..1/8 scale; others: Image.reduce right after decoding).
    """
    with Image.open(path) as img:
        if target is not None and img.format == "JPEG":
            side = 2 * max(target)  # both sides stay >= 2x the larger target side, whatever the EXIF orientation
            img.draft("RGB", (side, side))
        img.load()
        if target is not None:
            factor = min(img.size[0] // (2 * max(target)), img.size[1] // (2 * max(target)))
            if factor >= 2:
                img = img.reduce(factor)
        img = ImageOps.exif_transpose(img)
        return _to_8bit_rgb(img, background)


def resize_crop(
    img: Image.Image, size: int | tuple[int, int], center: bool = True, gen: torch.Generator | None = None
) -> Image.Image:
    """Resize to cover `size` (w, h) keeping the aspect ratio, then crop it (centre or random)."""
    box_w, box_h = (size, size) if isinstance(size, int) else size
    left, top, scale = crop_box(img.size, (box_w, box_h), center, gen)
    w, h = img.size
    nw, nh = max(box_w, round(w * scale)), max(box_h, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)
    return img.crop((left, top, left + box_w, top + box_h))


def crop_box(
    size: tuple[int, int], box: tuple[int, int], center: bool = True, gen: torch.Generator | None = None
) -> tuple[int, int, float]:
    """(left, top, scale): where the `box` crop lies in the image resized by `scale` to cover it."""
    w, h = size
    box_w, box_h = box
    scale = max(box_w / w, box_h / h)
    nw, nh = max(box_w, round(w * scale)), max(box_h, round(h * scale))
    if center:
        return (nw - box_w) // 2, (nh - box_h) // 2, scale
    left = int(torch.randint(0, nw - box_w + 1, (1,), generator=gen))
    top = int(torch.randint(0, nh - box_h + 1, (1,), generator=gen))
    return left, top, scale


def to_tensor(img: Image.Image) -> torch.Tensor:
    """HWC uint8 RGB -> CHW float in [-1, 1]."""
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
