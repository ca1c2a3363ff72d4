"""Image quality: blur, under- and over-exposure (from pixels), resolution below the training size and extreme aspect
ratios that the buckets crop hard (from the scan's sizes and buckets, no pixels: cheap, run at training start)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from sdft.data.images import crop_box
from sdft.prep.doctor.findings import Finding, Item, Severity
from sdft.prep.doctor.inputs import DoctorData

SHARP_SIDE = 512  # blur is measured on the image resized to this long side, so the figure does not depend on size
CONTRAST = 64.0  # the grey levels are scaled to this standard deviation first: a dark or flat photo is not "blurry"
BLUR_SEVERE, BLUR_WARN = 25.0, 80.0  # variance of the Laplacian; sharp real photos measure 270-15000 here
DARK, BRIGHT = 60.0, 200.0  # mean luminance (0-255) below / above which an image is under- / over-exposed
CLIPPED = 0.45  # share of pixels crushed to black (<= 8) or blown to white (>= 247) that is severe
UPSCALE_WARN, UPSCALE_SEVERE = 1.15, 2.0  # the factor an image is enlarged by to cover its bucket
KEPT_WARN, KEPT_SEVERE = 0.7, 0.5  # share of the image that survives the crop to its bucket


@dataclass(frozen=True)
class Pixels:
    """What one image's pixels say: sharpness (variance of the Laplacian), mean luminance, crushed and blown shares."""

    sharpness: float
    luminance: float
    dark: float
    bright: float


def laplacian_variance(gray: np.ndarray) -> float:
    # the 4-neighbour Laplacian written with numpy slices: two lines, where a library (OpenCV, scipy) would be a new
    # dependency of the core install for one stencil
    lap = gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1]
    return float(lap.var())


def measure(item: Item, img: Image.Image) -> Pixels:
    gray = img.convert("L")
    scale = SHARP_SIDE / max(gray.size)
    if scale < 1:
        gray = gray.resize((max(1, round(gray.size[0] * scale)), max(1, round(gray.size[1] * scale))), Image.BOX)
    g = np.asarray(gray, dtype=np.float32)
    sharpness = laplacian_variance(g * (CONTRAST / max(float(g.std()), 1.0)))
    return Pixels(sharpness, float(g.mean()), float((g <= 8).mean()), float((g >= 247).mean()))


def pixel_findings(data: DoctorData, pixels: dict) -> list[Finding]:
    out = []
    for item in data.items:
        p = pixels.get(item.path)
        if p is None:
            continue
        if p.sharpness < BLUR_WARN:
            severe = p.sharpness < BLUR_SEVERE
            out.append(
                Finding(
                    "blur",
                    Severity.severe if severe else Severity.warn,
                    f"{item.path.name} is {'very ' if severe else ''}blurry (sharpness {p.sharpness:.0f}; sharp photos "
                    f"measure {BLUR_WARN:.0f}+)",
                    "replace it with a sharp photo: the LoRA learns the blur",
                    [item.path],
                    {"sharpness": round(p.sharpness, 1)},
                )
            )
        for kind, low, share, limit in (
            ("under-exposed", p.luminance < DARK, p.dark, "crushed to black"),
            ("over-exposed", p.luminance > BRIGHT, p.bright, "blown to white"),
        ):
            if low or share >= CLIPPED:
                severe = share >= CLIPPED
                out.append(
                    Finding(
                        "exposure",
                        Severity.severe if severe else Severity.warn,
                        f"{item.path.name} is {kind} (mean luminance {p.luminance:.0f} of 255, {share:.0%} {limit})",
                        "use a better-exposed photo, or correct it in an editor (a copy, outside the dataset)",
                        [item.path],
                        {"luminance": round(p.luminance, 1), "clipped": round(share, 3)},
                    )
                )
    return out


def native_hint(item, native: int) -> str:
    """When the training size is above the base's native size and the image would not be enlarged at that size
    (e.g. the toy base's 32 px images trained at 64): the first fix is the resolution, not the image."""
    if max(item.bucket) > native and min(item.size) >= native:
        return f"train at the base model's native size (data.resolution={native}, or null: the base's own), or "
    return ""


def size_findings(data: DoctorData) -> list[Finding]:
    """Upscaled (with the factor) and hard-cropped images, from sizes and buckets alone."""
    out = []
    for item in data.items:
        left, top, scale = crop_box(item.size, item.bucket)
        if scale >= UPSCALE_WARN:
            severe = scale >= UPSCALE_SEVERE
            out.append(
                Finding(
                    "resolution",
                    Severity.severe if severe else Severity.warn,
                    f"{item.path.name} is {item.size[0]}x{item.size[1]}, below its training size "
                    f"{item.bucket[0]}x{item.bucket[1]}: enlarged x{scale:.2f}",
                    native_hint(item, data.native)
                    + "use a larger original (or upscale it with a super-resolution model first): enlarged images "
                    "teach softness",
                    [item.path],
                    {"upscale": round(scale, 3), "bucket": list(item.bucket)},
                )
            )
        kept = item.bucket[0] * item.bucket[1] / (scale * scale * item.size[0] * item.size[1])
        if kept < KEPT_WARN:
            severe = kept < KEPT_SEVERE
            ratio = max(item.size) / min(item.size)
            how = "aspect buckets" if data.settings.enable_bucket else "the square crop"
            out.append(
                Finding(
                    "aspect",
                    Severity.severe if severe else Severity.warn,
                    f"{item.path.name} ({item.size[0]}x{item.size[1]}, {ratio:.1f}:1) loses {1 - kept:.0%} of itself "
                    f"to {how} ({item.bucket[0]}x{item.bucket[1]})",
                    "crop it yourself around the subject"
                    + ("" if data.settings.enable_bucket else ", or train with data.enable_bucket=true"),
                    [item.path],
                    {"kept": round(kept, 3), "bucket": list(item.bucket)},
                )
            )
    return out
