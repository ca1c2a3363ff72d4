"""Crop boxes from a face box: the face close-up, the half-body shot, and an estimate of the whole subject.

Proportions are for a Haar/YuNet face box, which spans brows to mouth/chin (about 2/3 of the head's height):
the head's top lies ~0.6 box heights above the box, a half-body (head to waist) is ~5 box heights tall, and a
person's shoulders are ~3.5 box widths wide. Boxes are (left, top, right, bottom) in source pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdft.prep.faces import Face

Box = tuple[float, float, float, float]

HEADROOM = 0.7  # box heights kept above the face box (hair + a little air)
SUBJECT_WIDTH = 3.5  # face-box widths: shoulders of a person facing the camera
SUBJECT_HEIGHT = 8.0  # face-box heights from the top of the head to the feet (at most)
MIN_SUBJECT = 0.5  # the subject should fill at least half of a prepared frame (sdft data prepare warns)


@dataclass(frozen=True)
class Crop:
    box: Box
    tight: float  # 1.0 when the wanted box fits the frame; < 1 when the frame forced a smaller box

    @property
    def size(self) -> tuple[float, float]:
        return self.box[2] - self.box[0], self.box[3] - self.box[1]


def fit_box(cx: float, cy: float, w: float, h: float, frame: tuple[int, int], anchor_top: bool = False) -> Crop:
    """A (w, h) box centred on (cx, cy), shrunk (aspect kept) to fit the frame and then shifted inside it.
    `anchor_top`: a shrunk box keeps its top edge (the head) instead of its centre."""
    fw, fh = frame
    s = min(1.0, fw / w, fh / h)
    top = cy - h / 2
    w2, h2 = w * s, h * s
    y = top if anchor_top else cy - h2 / 2
    left = min(max(cx - w2 / 2, 0.0), fw - w2)
    y = min(max(y, 0.0), fh - h2)
    return Crop((left, y, left + w2, y + h2), s)


def face_crop(face: Face, frame: tuple[int, int], aspect: float, margin: float) -> Crop:
    """Close-up: `margin` face-box heights tall, centred on the head (a little above the box centre)."""
    h = face.h * margin
    return fit_box(face.cx, face.cy - 0.15 * face.h, h * aspect, h, frame)


def body_crop(face: Face, frame: tuple[int, int], aspect: float, heads: float) -> Crop:
    """Half-body: from just above the head down `heads` face-box heights, centred on the face horizontally."""
    h = face.h * heads
    top = face.y - HEADROOM * face.h
    return fit_box(face.cx, top + h / 2, h * aspect, h, frame, anchor_top=True)


def subject_box(face: Face, frame: tuple[int, int]) -> Box:
    """Where the person probably is: shoulders' width around the face, from the head's top to the feet (or the
    frame's bottom), clipped to the frame."""
    fw, fh = frame
    half = SUBJECT_WIDTH * face.w / 2
    top = face.y - HEADROOM * face.h
    bottom = face.y + SUBJECT_HEIGHT * face.h
    return max(0.0, face.cx - half), max(0.0, top), min(float(fw), face.cx + half), min(float(fh), bottom)


def fraction(box: Box, frame: tuple[int, int]) -> float:
    """The share of the frame a box covers."""
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]) / (frame[0] * frame[1])
