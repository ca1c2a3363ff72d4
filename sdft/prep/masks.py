"""Subject / face masks for masked training: white = subject, black = background, the size of the written image.

`face`: an ellipse over the head (from the face box). `subject`: OpenCV's GrabCut (colour models of subject and
background, no learned weights), seeded with the head as sure subject and the estimated person box as maybe-subject;
falls back to head ellipse + person box when GrabCut cannot separate them. GrabCut follows colour edges: a subject
whose clothes match the background, or a cluttered background, gives ragged masks; check them in the preview.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from sdft.prep.faces import Face, import_cv2
from sdft.prep.framing import Box

log = logging.getLogger(__name__)

SHOULDERS = 1.4  # face-box heights from the top of the face box down to the shoulder line


def head_ellipse(face: Face, shape: tuple[int, int], grow: float = 1.0) -> np.ndarray:
    """Boolean (h, w) mask of an ellipse over the head (hair included), `grow` times its usual size."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy = face.cx, face.cy - 0.12 * face.h
    ax, ay = 0.62 * face.w * grow, 0.85 * face.h * grow
    return ((xx + 0.5 - cx) / ax) ** 2 + ((yy + 0.5 - cy) / ay) ** 2 <= 1.0


def face_mask(img: Image.Image, face: Face) -> Image.Image:
    return Image.fromarray(head_ellipse(face, (img.size[1], img.size[0])).astype(np.uint8) * 255, "L")


def subject_mask(img: Image.Image, face: Face, person: Box, iterations: int = 4) -> Image.Image:
    """GrabCut seeded from the head (sure subject) and the person box (maybe subject); outside it background."""
    cv2 = import_cv2()
    w, h = img.size
    rgb = np.asarray(img.convert("RGB"))
    mask = np.full((h, w), cv2.GC_BGD, np.uint8)
    l, t, r, b = (int(round(v)) for v in person)
    shoulders = int(round(face.y + SHOULDERS * face.h))  # above this line only the head is the subject
    mask[max(0, t) : max(0, b), max(0, l) : max(0, r)] = cv2.GC_PR_BGD
    mask[max(0, shoulders) : max(0, b), max(0, l) : max(0, r)] = cv2.GC_PR_FGD
    border = max(2, round(0.02 * min(w, h)))  # a frame filled by the person still needs background samples
    edge = np.zeros((h, w), bool)
    edge[:border], edge[-border:], edge[:, :border], edge[:, -border:] = True, True, True, True
    mask[edge & (mask == cv2.GC_PR_FGD)] = cv2.GC_PR_BGD
    mask[head_ellipse(face, (h, w), grow=1.15)] = cv2.GC_PR_FGD
    mask[head_ellipse(face, (h, w), grow=0.6)] = cv2.GC_FGD
    fallback = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD))
    try:
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
        subject = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD))
    except cv2.error as err:
        log.warning("GrabCut failed (%s); the mask is the head ellipse and the person box.", err)
        subject = fallback
    if not subject.any() or subject.all():
        subject = fallback
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    cleaned = cv2.morphologyEx(subject.astype(np.uint8) * 255, cv2.MORPH_OPEN, kernel)
    return Image.fromarray(cv2.morphologyEx(cleaned, cv2.MORPH_CLOSE, kernel), "L")


def make_mask(kind: str, img: Image.Image, face: Face, person: Box, max_side: int = 512) -> Image.Image:
    """The mask of a whole source image (its size), computed at most `max_side` px wide for speed; crops of the
    image crop this mask, so GrabCut sees the whole frame's background."""
    scale = min(1.0, max_side / max(img.size))
    small_size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
    small = img if scale == 1.0 else img.resize(small_size, Image.Resampling.BOX)
    f = Face(face.x * scale, face.y * scale, face.w * scale, face.h * scale, face.score)
    box = tuple(v * scale for v in person)
    mask = face_mask(small, f) if kind == "face" else subject_mask(small, f, box)
    if scale == 1.0:
        return mask
    return mask.resize(img.size, Image.Resampling.BILINEAR).point(lambda v: 255 if v >= 128 else 0)


def crop_mask(mask: Image.Image, box, size: tuple[int, int]) -> Image.Image:
    """The mask of one written crop: same box, same size, still only black and white."""
    region = mask.crop(tuple(round(v) for v in box))
    return region.resize(size, Image.Resampling.BILINEAR).point(lambda v: 255 if v >= 128 else 0)
