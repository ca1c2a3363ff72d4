"""The options of `sdft data prepare` (sdft/prep/prepare.py), apart so the command line builds without the image libraries."""

from __future__ import annotations

from dataclasses import dataclass

SETS = ("face", "body", "full")


@dataclass
class PrepareOptions:
    sets: tuple[str, ...] = ("face", "body")
    face_size: tuple[int, int] = (512, 512)
    body_size: tuple[int, int] = (512, 512)
    full_min_side: int = 512  # `full`: whole images, upscaled so the short side reaches this (never shrunk)
    face_margin: float = 2.4  # face crop height in face-box heights
    body_heads: float = 5.0  # half-body crop height in face-box heights
    several_faces: str = "largest"  # or "skip"
    face_model: str | None = None
    upscaler: str | None = None
    masks: str | None = None  # None, "subject" or "face"
    caption_extension: str = ".txt"
    image_format: str = "png"
    recursive: bool = True
    overwrite: bool = False
    preview: bool = True
    device: str = "cpu"
