"""Faces: none, several, too small in the frame (the framing rule of `sdft data prepare`), and identity outliers.

Faces are found and described by dlib's model (sdft/prep/face_identity.py) on the image at `FACE_SIDE` px. A concept
counts as a face set when at least half its images show a face; only face sets get these findings (a dog's set has
no faces to miss). Identity: the descriptor of each image's largest face; the set's person is the largest group of
faces within dlib's same-person distance of one face (at least 3 faces and half the set); a face whose median
distance to that group is beyond the threshold is "a different person?".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from sdft.prep.faces import Face, main_faces
from sdft.errors import ConfigError
from sdft.prep.framing import MIN_SUBJECT, fraction, subject_box
from sdft.prep.doctor.findings import Finding, Item, Severity
from sdft.prep.doctor.inputs import DoctorData
from sdft.prep.face_identity import SAME_PERSON, FaceIdentity

FACE_SIDE = 1024  # detection size: faces down to ~40 px at this size are found (one upsampling pass)
FACE_SET = 0.5  # share of a concept's images with a face that makes it a face set
MIN_SCORE = 0.3  # dlib HOG detections below this are dropped: real faces here score ~1, hits on a suit or a collar ~0.1
MIN_GROUP = 3  # faces that must agree before one can be called an outlier


@dataclass(frozen=True)
class FaceInfo:
    count: int  # faces of the subject's size and confidence (sdft.prep.faces.main_faces)
    face: Face | None  # the largest, in the measured image's pixels
    subject: float | None  # share of the frame the person covers (sdft.prep.framing)
    descriptor: np.ndarray | None


class FaceMeter:
    """Loads dlib's models once; `measure` one image."""

    def __init__(self):
        try:
            self.identity = FaceIdentity(upsample=1, min_score=MIN_SCORE)
        except ConfigError as err:
            raise ConfigError(f"{err} Or skip the face checks: --no-faces.") from None

    def measure(self, item: Item, img: Image.Image) -> FaceInfo:
        scale = min(1.0, FACE_SIDE / max(img.size))
        if scale < 1:
            img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.BILINEAR)
        rgb = np.asarray(img)
        faces = main_faces(self.identity.detect(rgb))
        if not faces:
            return FaceInfo(0, None, None, None)
        face = faces[0]
        return FaceInfo(
            len(faces), face, fraction(subject_box(face, img.size), img.size), self.identity.describe(rgb, face)
        )


def identity_outliers(descriptors: dict) -> tuple[list, dict]:
    """(the set's person: paths of the largest same-person group, {outlier path: median distance to that group})."""
    paths = list(descriptors)
    if len(paths) < MIN_GROUP:
        return [], {}
    d = np.stack([descriptors[p] for p in paths])
    dist = np.linalg.norm(d[:, None, :] - d[None, :, :], axis=-1)
    near = (dist < SAME_PERSON).sum(axis=1)
    centre = int(np.argmax(near))
    group = [k for k in range(len(paths)) if dist[centre, k] < SAME_PERSON]
    if len(group) < MIN_GROUP or len(group) < FACE_SET * len(paths):
        return [], {}
    outliers = {}
    for k in range(len(paths)):
        others = [j for j in group if j != k]
        median = float(np.median(dist[k, others]))
        if median >= SAME_PERSON:
            outliers[paths[k]] = median
    return [paths[k] for k in group], outliers


def check(data: DoctorData, infos: dict) -> list[Finding]:
    out = []
    by_concept: dict[str, list[Item]] = {}
    for item in data.instances:
        if item.path in infos:
            by_concept.setdefault(item.name, []).append(item)
    for name, items in by_concept.items():
        with_face = [i for i in items if infos[i.path].count]
        if len(with_face) < FACE_SET * len(items):
            continue  # not a set of faces
        for item in items:
            info = infos[item.path]
            if info.count == 0:
                out.append(
                    Finding(
                        "faces",
                        Severity.warn,
                        f"{item.path.name}: no face found in a set of faces ({len(with_face)} of {len(items)} show one)",
                        "check it shows the subject; a back view or profile is fine, a photo of something else is not",
                        [item.path],
                    )
                )
            elif info.count > 1:
                out.append(
                    Finding(
                        "faces",
                        Severity.warn,
                        f"{item.path.name}: {info.count} faces of similar size: the LoRA learns all of them as the "
                        "subject",
                        "crop the others out (sdft data prepare crops the largest face)",
                        [item.path],
                        {"faces": info.count},
                    )
                )
            if info.subject is not None and info.subject < MIN_SUBJECT:
                out.append(
                    Finding(
                        "faces",
                        Severity.warn,
                        f"{item.path.name}: the person fills ~{info.subject:.0%} of the frame (< {MIN_SUBJECT:.0%})",
                        "crop closer (sdft data prepare makes face and half-body crops)",
                        [item.path],
                        {"subject_fraction": round(info.subject, 3)},
                    )
                )
        group, outliers = identity_outliers({i.path: infos[i.path].descriptor for i in with_face})
        for path, median in sorted(outliers.items(), key=lambda kv: -kv[1]):
            out.append(
                Finding(
                    "identity",
                    Severity.severe,
                    f"{path.name}: a different person? Its face is {median:.2f} from the set's {len(group)} matching "
                    f"faces (same person: < {SAME_PERSON})",
                    "remove it unless it is the subject (then the set needs more photos like it)",
                    [path],
                    {"median_distance": round(median, 3), "group": len(group)},
                )
            )
    return out
