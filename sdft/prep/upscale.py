"""Resizing crops to their target size: Lanczos (PIL) by default, or a super-resolution model the user supplies,
loaded by `spandrel` (ESRGAN / Real-ESRGAN / SwinIR / HAT / ... `.pth` or `.safetensors` files).

spandrel is not a dependency of sdft: it requires torchvision, whose PyPI wheels pull a CUDA torch build beside the
CPU one. It is used when it is already installed (with a torchvision that matches your torch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sdft.errors import ConfigError


class LanczosResizer:
    """PIL's Lanczos: sharp, no ringing to speak of at 2-4x, no hallucinated detail; small images stay soft."""

    name = "lanczos"

    def resize(self, img: Image.Image, size: tuple[int, int]) -> Image.Image:
        return img.resize(size, Image.Resampling.LANCZOS)


class ModelUpscaler:
    """A spandrel image-to-image model: run once at its native scale on images that must grow, then Lanczos to
    the exact size. Shrinking never goes through the model."""

    def __init__(self, model, name: str, device: str = "cpu"):
        self.model, self.device = model, device
        self.scale = int(getattr(model, "scale", 1))
        self.name = name
        self.lanczos = LanczosResizer()

    def resize(self, img: Image.Image, size: tuple[int, int]) -> Image.Image:
        if size[0] <= img.size[0] and size[1] <= img.size[1]:
            return self.lanczos.resize(img, size)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].to(self.device)
        with torch.inference_mode():
            y = self.model(x)
        arr = (y[0].clamp(0, 1).permute(1, 2, 0).float().cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
        return self.lanczos.resize(Image.fromarray(arr, "RGB"), size)


def load_spandrel(path: str | Path, device: str = "cpu") -> ModelUpscaler:
    """The user's upscaler weights through spandrel, or a ConfigError saying what to install or fix."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"--upscaler {path}: no such file (give an ESRGAN/Real-ESRGAN/SwinIR/... .pth or "
            ".safetensors, or leave it out for Lanczos)."
        )
    try:
        from spandrel import ImageModelDescriptor, ModelLoader
    except ImportError as err:
        raise ConfigError(
            f"--upscaler needs spandrel, which sdft does not install (it requires torchvision, whose PyPI wheels "
            f"pull a CUDA torch): install torchvision matching your torch, then `pip install spandrel` "
            f"({type(err).__name__}: {err}). Without --upscaler, Lanczos is used."
        ) from err
    try:
        descriptor = ModelLoader(device=device).load_from_file(str(path))
    except Exception as err:  # spandrel raises several types for unknown architectures / bad files
        raise ConfigError(f"--upscaler {path}: spandrel cannot load it ({type(err).__name__}: {err}).") from err
    if not isinstance(descriptor, ImageModelDescriptor):
        raise ConfigError(f"--upscaler {path}: not an image-to-image model ({type(descriptor).__name__}).")
    descriptor.eval()
    return ModelUpscaler(descriptor, f"{path.name} (x{descriptor.scale}, spandrel)", device)


def make_resizer(upscaler: str | Path | None, device: str = "cpu"):
    return LanczosResizer() if upscaler is None else load_spandrel(upscaler, device)
