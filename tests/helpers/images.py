"""Small generated images for the data tests: every odd kind the loader must handle or reject by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size=(32, 24), color=(200, 30, 30), mode="RGB", **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, **save)
    return path


def noise_image(path: Path, size=(48, 40), seed=0, **save) -> Path:
    """Random pixels: every file different (no accidental duplicates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr, "RGB").save(path, **save)
    return path


def odd_folder(root: Path, with_bad: bool = True) -> dict[str, Path]:
    """Every kind from issue 4 rule 6; returns name -> path (bad ones under keys starting with 'bad_')."""
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise
    img.save(root / "exif.jpg", exif=exif)
    files["exif"] = root / "exif.jpg"
    files["rgba"] = write_image(root / "rgba.png", (32, 32), (255, 0, 0, 0), "RGBA")
    files["la"] = write_image(root / "la.png", (32, 32), (0, 0), "LA")
    pal = Image.new("P", (32, 32), 0)
    pal.putpalette([255, 0, 0] * 256)
    pal.save(root / "palette.png", transparency=0)
    files["palette"] = root / "palette.png"
    files["gray"] = write_image(root / "gray.png", (32, 32), 100, "L")
    files["cmyk"] = write_image(root / "cmyk.jpg", (32, 32), (255, 0, 0, 0), "CMYK")  # cyan
    Image.fromarray(np.full((32, 32), 32768, dtype=np.uint16)).save(root / "deep16.png")
    files["deep16"] = root / "deep16.png"
    files["unicode"] = noise_image(root / "çafé_写真_🙂.png", seed=1)
    files["huge"] = noise_image(root / "huge.jpg", size=(2400, 1600), seed=2, quality=50)
    files["dup_a"] = noise_image(root / "dup_a.png", seed=3)
    files["dup_b"] = noise_image(root / "sub" / "dup_b.png", seed=3)
    (root / "notes.bin").write_bytes(b"\x00\x01")
    files["ignored"] = root / "notes.bin"
    if with_bad:
        (root / "zero.png").write_bytes(b"")
        files["bad_zero"] = root / "zero.png"
        (root / "text.png").write_text("not an image")
        files["bad_text"] = root / "text.png"
        data = (root / "exif.jpg").read_bytes()
        full = noise_image(root / "trunc_src.jpg", size=(64, 64), seed=4).read_bytes()
        (root / "trunc_src.jpg").unlink()
        (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
        files["bad_truncated"] = root / "truncated.jpg"
        assert data
    return files
