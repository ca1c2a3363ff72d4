"""Per-image loss masks (loss.masked_loss): from data.mask_dir (same stem), else `<stem>.mask.png` beside the image,
else the image's alpha channel; an image with none of them is weighted 1 everywhere. A mask goes through the very
resize, crop and flip of its sample (the SampleSpec that also keys the latent cache), so it stays aligned with the
pixels or cached latents; the module area-averages it to the latent size (sdft/training/losses.py mask_weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from sdft.data.dataset import Example, SampleSpec, cover
from sdft.data.images import IMAGE_EXTENSIONS, MASK_SUFFIX
from sdft.errors import ConfigError, DataError


def mask_file(image: Path, mask_dir: Path | None) -> Path | None:
    """The mask file of `image`: mask_dir/<stem>.<image ext> first, then <stem>.mask.png beside the image."""
    if mask_dir is not None:
        for ext in sorted(IMAGE_EXTENSIONS):
            for candidate in (mask_dir / f"{image.stem}{ext}", mask_dir / f"{image.stem}{ext.upper()}"):
                if candidate.is_file():
                    return candidate
    beside = image.with_name(image.stem + MASK_SUFFIX)
    return beside if beside.is_file() else None


def load_mask(image: Path, mask_dir: Path | None) -> Image.Image | None:
    """The mask as an upright 8-bit grayscale image (255 = train here), or None when the image has none."""
    path = mask_file(image, mask_dir)
    try:
        if path is not None:
            with Image.open(path) as m:
                return ImageOps.exif_transpose(m).convert("L")
        with Image.open(image) as img:
            if "A" in img.getbands() or (img.mode == "P" and "transparency" in img.info):
                return ImageOps.exif_transpose(img).convert("RGBA").getchannel("A")
    except OSError as err:
        raise DataError(f"loss mask for {image} ({path or 'alpha channel'}) cannot be read: {err}") from err
    return None


class MaskTransform:
    """(example, spec) -> (1, H, W) float mask in [0, 1], resized/cropped/flipped as ImageTransform does the pixels."""

    def __init__(self, mask_dir: str | None = None):
        self.mask_dir = Path(mask_dir).expanduser() if mask_dir else None
        if self.mask_dir is not None and not self.mask_dir.is_dir():
            raise ConfigError(f"data.mask_dir={mask_dir} is not a folder (masks named like the images' stems).")

    def __call__(self, example: Example, spec: SampleSpec) -> torch.Tensor:
        w, h = spec.size
        mask = load_mask(example.path, self.mask_dir)
        if mask is None:
            return torch.ones(1, h, w)
        full = example.size or mask.size
        if mask.size != tuple(full):  # a mask drawn at another resolution: stretched onto the image first
            mask = mask.resize(tuple(full), Image.Resampling.BILINEAR)
        nw, nh = cover(full, spec.size)
        mask = mask.resize((nw, nh), Image.Resampling.BILINEAR)
        mask = mask.crop((spec.crop[0], spec.crop[1], spec.crop[0] + w, spec.crop[1] + h))
        out = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None]
        return out.flip(-1) if spec.flip else out
