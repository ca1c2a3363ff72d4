"""Face detection for `sdft data prepare`, offline on a fresh install.

Default: OpenCV's frontal-face Haar cascade, which ships inside the `opencv-python-headless` 4.x wheel
(`cv2.data.haarcascades`; the 5.x wheels no longer ship the cascade files, hence the `<5` pin of the `prep` extra).
Stronger or different detectors when the user has the file: any OpenCV cascade `.xml` (e.g. an anime-face LBP
cascade) or a YuNet `.onnx` (OpenCV's `FaceDetectorYN`, from the OpenCV model zoo).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdft.errors import ConfigError

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class Face:
    """A face box in pixels of the image it was found in; `score`: the detector's confidence (its own scale)."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def area(self) -> float:
        return self.w * self.h


def import_cv2():
    """cv2, or a ConfigError that says how to install it."""
    try:
        import cv2
    except ImportError as err:
        raise ConfigError(
            "face detection needs OpenCV: pip install 'opencv-python-headless<5' (or: pip install -e \".[prep]\")."
        ) from err
    return cv2


class CascadeDetector:
    """An OpenCV cascade (Haar or LBP): fast, frontal/near-frontal faces only; misses profiles, strong tilt,
    masks/occlusion and (with the bundled cascade) drawn/anime faces; some false positives on busy textures."""

    def __init__(
        self, path: str | Path | None = None, min_neighbors: int = 5, min_face: float = 0.03, max_side: int = 1024
    ):
        cv2 = import_cv2()
        if path is None:
            path = Path(cv2.data.haarcascades) / DEFAULT_CASCADE
            if not path.is_file():
                raise ConfigError(
                    f"OpenCV has no {DEFAULT_CASCADE} (opencv-python-headless 5.x no longer ships the "
                    "cascades): pip install 'opencv-python-headless<5', or pass --face-model FILE."
                )
        try:
            self.classifier = cv2.CascadeClassifier(str(path))
        except (cv2.error, SystemError):  # OpenCV raises either for a file it cannot parse
            self.classifier = None
        if self.classifier is None or self.classifier.empty():
            raise ConfigError(f"--face-model {path}: not an OpenCV cascade file OpenCV can read.")
        self.name = f"cascade {Path(path).name}"
        self.min_neighbors, self.min_face, self.max_side = min_neighbors, min_face, max_side

    def detect(self, rgb: np.ndarray) -> list[Face]:
        cv2 = import_cv2()
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.max_side / max(gray.shape))  # bounded time on huge photos
        if scale < 1.0:
            gray = cv2.resize(
                gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)), interpolation=cv2.INTER_AREA
            )
        gray = cv2.equalizeHist(gray)
        smallest = max(20, round(self.min_face * min(gray.shape)))
        boxes, _, weights = self.classifier.detectMultiScale3(
            gray,
            scaleFactor=1.1,
            minNeighbors=self.min_neighbors,
            minSize=(smallest, smallest),
            outputRejectLevels=True,
        )
        faces = [
            Face(x / scale, y / scale, w / scale, h / scale, float(s))
            for (x, y, w, h), s in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1))
        ]
        return sorted(faces, key=lambda f: -f.area)


class YuNetDetector:
    """OpenCV's YuNet CNN (`cv2.FaceDetectorYN`, a ~300 kB .onnx the user supplies): handles tilt, partial
    profiles, glasses and small faces far better than a cascade; still trained on photos of real faces."""

    def __init__(self, path: str | Path, score_threshold: float = 0.6, max_side: int = 1024):
        cv2 = import_cv2()
        try:
            self.net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold, 0.3, 5000)
        except cv2.error as err:
            why = " ".join(str(err).split())
            raise ConfigError(f"--face-model {path}: OpenCV cannot load it as a YuNet face detector ({why}).") from err
        self.name = f"yunet {Path(path).name}"
        self.max_side = max_side

    def detect(self, rgb: np.ndarray) -> list[Face]:
        cv2 = import_cv2()
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        scale = min(1.0, self.max_side / max(bgr.shape[:2]))
        if scale < 1.0:
            bgr = cv2.resize(
                bgr, (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale)), interpolation=cv2.INTER_AREA
            )
        self.net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, found = self.net.detect(bgr)
        rows = [] if found is None else found
        faces = [Face(r[0] / scale, r[1] / scale, r[2] / scale, r[3] / scale, float(r[-1])) for r in rows]
        return sorted(faces, key=lambda f: -f.area)


def make_detector(model: str | Path | None = None):
    """None: the bundled Haar cascade; a `.xml`: that cascade; a `.onnx`: YuNet."""
    if model is None:
        return CascadeDetector()
    path = Path(model).expanduser()
    if not path.is_file():
        raise ConfigError(f"--face-model {model}: no such file (give an OpenCV cascade .xml or a YuNet .onnx).")
    if path.suffix.lower() == ".xml":
        return CascadeDetector(path)
    if path.suffix.lower() == ".onnx":
        return YuNetDetector(path)
    raise ConfigError(f"--face-model {model}: unknown kind; give an OpenCV cascade .xml or a YuNet .onnx.")


def main_faces(faces: list[Face], size_ratio: float = 0.5, score_ratio: float = 0.25) -> list[Face]:
    """The subject and its peers, largest first: detections scoring at least `score_ratio` of the best score
    (a cascade's weak hits on collars and textures go), then at least `size_ratio` of the largest one's side
    (background people). So only similar, confident faces make an image a 'several faces' image."""
    if not faces:
        return []
    best = max(f.score for f in faces)
    confident = [f for f in faces if f.score >= score_ratio * best] if best > 0 else list(faces)
    top = max(f.w for f in confident)
    return sorted((f for f in confident if f.w >= size_ratio * top), key=lambda f: -f.area)
