"""The toy subject as the detector reads it, and whether a detection matches it: shared by the toy measurement
(sdft/toy/measure.py) and the likeness meter's toy scorer (sdft/evaluation/likeness_scorers.py), apart from
measure.py's training entry point (which imports sdft.run.train: the meter is part of training)."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from sdft.errors import DataError
from sdft.toy.detector import Detection, detect

SUBJECT_KEYS = ("cls", "colour", "second", "pattern")


def subject_attributes(images: Iterable) -> dict[str, str]:
    """The subject as the detector reads it: the majority value of each subject attribute over its images."""
    found = [detect(im).attributes() for im in images]
    if not found:
        raise DataError("No subject images to read the subject's attributes from; pass the instance images.")
    subject = {k: Counter(f[k] for f in found).most_common(1)[0][0] for k in SUBJECT_KEYS}
    if None in subject.values():
        raise DataError(
            f"The detector finds no toy-world object in most subject images ({subject}); the toy "
            "measurement needs a subject drawn in the toy world (datasets/make_toy_subject.py)."
        )
    return subject


def matches(detection: Detection | dict, subject: dict[str, str]) -> bool:
    d = detection.attributes() if isinstance(detection, Detection) else detection
    return all(d[k] == v for k, v in subject.items())
