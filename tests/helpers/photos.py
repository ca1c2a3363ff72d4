"""Test photos for `sdft data prepare`: scikit-image's astronaut (a real photograph shipped in the package), scaled and
placed in larger canvases, so framing, face counts and sizes are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

GREY = (120, 130, 140)


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())  # 512x512, one frontal face at about (177, 67, 93, 93)


def canvas(size: tuple[int, int], placements: list[tuple[int, tuple[int, int]]]) -> Image.Image:
    """A grey canvas with the astronaut pasted at each (side, (x, y))."""
    img, out = astronaut(), Image.new("RGB", size, GREY)
    for side, xy in placements:
        out.paste(img.resize((side, side), Image.Resampling.LANCZOS), xy)
    return out


def write_photos(folder: Path) -> dict[str, Path]:
    """close: fills the frame; far: small in a big frame (< 50 %); two: two people; noface: the suit only."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "close": folder / "close.jpg",
        "far": folder / "far.png",
        "two": folder / "two.png",
        "noface": folder / "noface.png",
    }
    canvas((280, 270), [(256, (12, 14))]).save(files["close"], quality=92)
    canvas((800, 600), [(256, (380, 300))]).save(files["far"])
    canvas((560, 280), [(256, (10, 12)), (256, (290, 12))]).save(files["two"])
    Image.fromarray(np.asarray(astronaut())[300:]).save(files["noface"])
    (folder / "close.txt").write_text("photo of sks person, smiling\n", encoding="utf-8")
    return files
