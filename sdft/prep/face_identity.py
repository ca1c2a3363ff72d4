"""Face identity with dlib's face-recognition ResNet, offline: faces found, 128-d descriptors, distances.

The model files ship in the `face-recognition-models` package (PyPI), dlib itself in `dlib-bin`; nothing is downloaded
at run time (`pip install -e ".[faces]"`). Two descriptors closer than `SAME_PERSON` (0.6, dlib's own threshold for its
model) are taken to be the same person. Used by `sdft data doctor` (identity outliers) and meant for a likeness meter.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdft.prep.faces import Face
from sdft.errors import ConfigError

SAME_PERSON = 0.6  # dlib's usual Euclidean threshold between descriptors of one person
INSTALL = 'pip install dlib-bin face-recognition-models (or: pip install -e ".[faces]")'


def _import_dlib():
    try:
        import dlib
    except ImportError as err:
        raise ConfigError(f"face identity needs dlib and its model files: {INSTALL}.") from err
    return dlib


def model_dir() -> Path:
    """The folder of dlib's model files inside the `face_recognition_models` package. Found by its location, not by
    importing it: its __init__ imports pkg_resources, which recent setuptools no longer ship."""
    spec = importlib.util.find_spec("face_recognition_models")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / "models" / "dlib_face_recognition_resnet_model_v1.dat").is_file():
            return Path(folder) / "models"
    raise ConfigError(f"face identity needs dlib's model files (the face-recognition-models package): {INSTALL}.")


@dataclass(frozen=True)
class FoundFace:
    """A face box (sdft.prep.faces.Face, in the given image's pixels) and its 128-d identity descriptor."""

    box: Face
    descriptor: np.ndarray


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two descriptors (< SAME_PERSON: the same person)."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


class FaceIdentity:
    """dlib's HOG frontal-face detector, 5-point landmarks and ResNet descriptor, loaded once (about 0.1 s)."""

    def __init__(self, upsample: int = 1, min_score: float = 0.0):
        dlib = _import_dlib()
        models = model_dir()
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.encoder = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self.min_score = min_score  # dlib's detection threshold (0: its default; weak false hits score ~0.05-0.15)
        self.upsample = upsample  # upsampling passes when none is found at the image's size: one finds ~40 px faces

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Face boxes, largest first; `score` is the HOG detector's confidence (> 0; weak hits are near 0).

        First at the image's own size (faces of 80 px and more, about 0.1 s per megapixel), then, only when that finds
        none, with `upsample` passes (each halves the smallest face found and costs about four times as much)."""
        rgb = np.ascontiguousarray(rgb)
        faces = self._run(rgb, 0)
        if not faces and self.upsample:
            faces = self._run(rgb, self.upsample)
        return faces

    def _run(self, rgb: np.ndarray, upsample: int) -> list[Face]:
        rects, scores, _ = self.detector.run(rgb, upsample, self.min_score)
        faces = [Face(r.left(), r.top(), r.width(), r.height(), float(s)) for r, s in zip(rects, scores)]
        return sorted(faces, key=lambda f: -f.area)

    def describe(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """The 128-d descriptor of one face box of `rgb`."""
        dlib = _import_dlib()
        rect = dlib.rectangle(round(face.x), round(face.y), round(face.x + face.w), round(face.y + face.h))
        shape = self.landmarks(np.ascontiguousarray(rgb), rect)
        return np.asarray(self.encoder.compute_face_descriptor(np.ascontiguousarray(rgb), shape), dtype=np.float32)

    def faces(self, rgb: np.ndarray) -> list[FoundFace]:
        """Every face found, with its descriptor, largest first."""
        return [FoundFace(f, self.describe(rgb, f)) for f in self.detect(rgb)]
