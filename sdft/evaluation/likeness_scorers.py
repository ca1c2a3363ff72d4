"""How much generated images look like the subject, per metric (callbacks.likeness.metric):

- face: dlib's face descriptor (sdft/prep/face_identity.py); likeness = share of images whose largest face lies within
  dlib's same-person distance (0.6) of a training face (no face: a miss), plus the mean distance of the faces found;
- image: mean DINO cosine similarity to the training images (`sdft eval`'s DINO; CLIP-I beside it), CLIP-T for
  prompt adherence;
- toy: the toy detector's all-attribute fidelity (sdft/toy/measure.py); adherence = the prompt's background drawn.

Every scorer gives `likeness(images) -> float` (higher = more like the subject) and `details(images)` (extra columns).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

import numpy as np
from PIL import Image

from sdft.errors import DataError
from sdft.toy.world import RESOLUTION as TOY_SIZE  # the toy world's images, what the toy metric's detector reads

log = logging.getLogger(__name__)
FACES_IN_MOST = 0.5  # auto picks the face metric when faces are found in more than this share of training images


class ToyScorer:
    name = "toy"

    def __init__(self, subject_images: list[Image.Image]):
        from sdft.toy.subject import subject_attributes

        sizes = sorted({im.size for im in subject_images if im.size != (TOY_SIZE, TOY_SIZE)})
        if sizes:
            raise DataError(
                f"callbacks.likeness.metric=toy reads toy-world subjects (32x32 images drawn by sdft.toy.world); this "
                f"subject has images of {', '.join(f'{w}x{h}' for w, h in sizes)}: use callbacks.likeness.metric=image "
                "(or auto)."
            )
        self.subject = subject_attributes(subject_images)

    def likeness(self, images: list[Image.Image]) -> float:
        from sdft.toy.detector import detect
        from sdft.toy.subject import matches

        return float(np.mean([matches(detect(im), self.subject) for im in images]))

    def details(self, images: list[Image.Image]) -> dict:
        return {}

    def adherence(self, images: list[Image.Image], prompts: list[str]) -> float | None:
        """Share of images showing the background their prompt names (prompts without one are not counted)."""
        from sdft.toy.detector import detect
        from sdft.toy.world import BACKGROUNDS

        hits = []
        for im, prompt in zip(images, prompts):
            named = re.search(r"on an? (\w+) background", prompt)
            if named and named.group(1) in BACKGROUNDS:
                hits.append(detect(im).background == named.group(1))
        return float(np.mean(hits)) if hits else None


class ImageScorer:
    name = "image"

    def __init__(self, subject_images: list[Image.Image], clip, dino):
        self.clip, self.dino = clip, dino  # sdft.evaluation.features scorers
        self.real_dino, self.real_clip = dino.images(subject_images), clip.images(subject_images)

    def likeness(self, images: list[Image.Image]) -> float:
        from sdft.evaluation.metrics import mean_similarity

        return mean_similarity(self.dino.images(images), self.real_dino)

    def details(self, images: list[Image.Image]) -> dict:
        from sdft.evaluation.metrics import mean_similarity

        return {"clip_i": mean_similarity(self.clip.images(images), self.real_clip)}

    def adherence(self, images: list[Image.Image], prompts: list[str]) -> float | None:
        from sdft.evaluation.metrics import clip_t

        return clip_t(self.clip.images(images), self.clip.texts(prompts))


@lru_cache(maxsize=1)
def face_identity():
    """dlib's detector and descriptor, loaded once per process (the model files are 100 MB)."""
    from sdft.prep.face_identity import FaceIdentity  # clear error naming the extra when dlib is missing

    return FaceIdentity()


class FaceScorer:
    name = "face"

    def __init__(self, subject_images: list[Image.Image], identity=None):
        self.identity = identity or face_identity()
        found = [self.identity.faces(np.asarray(im.convert("RGB"))) for im in subject_images]
        self.reference = [faces[0].descriptor for faces in found if faces]
        if len(self.reference) <= FACES_IN_MOST * len(subject_images):
            raise DataError(
                f"callbacks.likeness.metric=face: faces found in only {len(self.reference)} of {len(subject_images)} "
                "training images; use callbacks.likeness.metric=image (or auto) for a subject that is not a face."
            )

    def distances(self, images: list[Image.Image]) -> list[float | None]:
        """Distance of each image's largest face to the nearest training face; None: no face found."""
        from sdft.prep.face_identity import distance

        out: list[float | None] = []
        for im in images:
            faces = self.identity.faces(np.asarray(im.convert("RGB")))
            out.append(min(distance(faces[0].descriptor, r) for r in self.reference) if faces else None)
        return out

    def likeness(self, images: list[Image.Image]) -> float:
        from sdft.prep.face_identity import SAME_PERSON

        return float(np.mean([d is not None and d < SAME_PERSON for d in self.distances(images)]))

    def details(self, images: list[Image.Image]) -> dict:
        found = [d for d in self.distances(images) if d is not None]
        return {
            "face_found": len(found) / max(len(images), 1),
            "face_distance": float(np.mean(found)) if found else None,
        }

    def adherence(self, images: list[Image.Image], prompts: list[str]) -> float | None:
        return None


def face_share(images: list[Image.Image]) -> float | None:
    """Share of images with a face (dlib); None when dlib is not installed."""
    try:
        identity = face_identity()
    except Exception as err:  # noqa: BLE001  (ConfigError naming the extra, or the package missing altogether)
        log.info("Likeness metric auto: no face detector (%s); using the image metric", err)
        return None
    return float(np.mean([bool(identity.detect(np.asarray(im.convert("RGB")))) for im in images]))


def choose_metric(spec: str, base_model: str | None, subject_images: list[Image.Image]) -> str:
    """toy | face | image: `spec` unless auto; auto: toy on the toy base, face when faces are in most training
    images (and dlib is installed), else image (also on the tiny test base)."""
    if spec != "auto":
        return spec
    if base_model == "toy":
        if all(im.size == (TOY_SIZE, TOY_SIZE) for im in subject_images):
            return "toy"
        log.info("Likeness metric auto: the subject's images are not 32 px toy-world images; using the image metric")
        return "image"
    if base_model in ("tiny", "sdxl_tiny"):  # the offline test bases draw no faces: no face detector to load
        return "image"
    share = face_share(subject_images)
    return "face" if share is not None and share > FACES_IN_MOST else "image"


def make_scorer(metric: str, subject_images: list[Image.Image], features=None):
    """The scorer for `metric`; `features()` -> (clip, dino) scorers, called only for the image metric."""
    if metric == "toy":
        return ToyScorer(subject_images)
    if metric == "face":
        return FaceScorer(subject_images)
    clip, dino = features()
    return ImageScorer(subject_images, clip, dino)
