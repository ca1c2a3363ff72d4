"""The likeness meter's face metric with the real dlib face-recognition model on real photos shipped in packages:
skimage's astronaut (Eileen Collins) and matplotlib's Grace Hopper, augmented (crops, flips, colour, size)."""

import pytest
from PIL import Image, ImageEnhance, ImageOps

pytest.importorskip("dlib", reason="the face metric needs the `faces` extra (dlib-bin, face-recognition-models)")
skdata = pytest.importorskip("skimage.data")
cbook = pytest.importorskip("matplotlib.cbook")
pytestmark = pytest.mark.slow  # dlib loads its 100 MB model: ~10 s idle, over a minute on the contended 2 cores

from sdft.errors import DataError  # noqa: E402
from sdft.evaluation.likeness_scorers import FaceScorer, choose_metric  # noqa: E402


def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


def hopper() -> Image.Image:
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return Image.open(f).convert("RGB")


def augment(im: Image.Image, k: int) -> Image.Image:
    """A crop around the face's half of the picture, flipped / recoloured / resized by k."""
    w, h = im.size
    box = (int(w * 0.05 * (k % 3)), int(h * 0.03 * (k % 2)), int(w * (0.85 + 0.05 * (k % 3))), h)
    out = im.crop(box)
    if k % 2:
        out = ImageOps.mirror(out)
    out = ImageEnhance.Color(out).enhance(0.6 + 0.2 * k)
    out = ImageEnhance.Brightness(out).enhance(0.9 + 0.05 * k)
    scale = 0.5 + 0.05 * (k % 3)  # about 250 px: the face stays over dlib's 40 px, detection stays fast
    return out.resize((int(out.width * scale), int(out.height * scale)))


@pytest.fixture(scope="module")
def scorer():
    return FaceScorer([augment(astronaut(), k) for k in range(3)])


def test_same_person_scores_as_the_same_person(scorer):
    same = [augment(astronaut(), k) for k in range(3, 6)]
    assert scorer.likeness(same) == 1.0
    details = scorer.details(same)
    assert details["face_found"] == 1.0 and details["face_distance"] < 0.6


def test_another_person_does_not(scorer):
    others = [augment(hopper(), k) for k in range(3)]
    assert scorer.likeness(others) == 0.0
    assert scorer.details(others)["face_distance"] > 0.6


def test_no_face_is_a_miss_and_forcing_the_metric_on_faceless_data_is_one_clear_error(scorer):
    coffee = Image.fromarray(skdata.coffee()).reduce(2)
    assert scorer.likeness([coffee]) == 0.0
    with pytest.raises(DataError, match="metric=image"):
        FaceScorer([coffee, Image.fromarray(skdata.chelsea()).reduce(2)])


def test_auto_picks_face_for_portraits_and_image_otherwise():
    assert choose_metric("auto", "some/model", [augment(astronaut(), k) for k in range(2)]) == "face"
    assert choose_metric("auto", "some/model", [Image.fromarray(skdata.coffee()).reduce(2)]) == "image"
    assert choose_metric("auto", "toy", []) == "toy"
    assert choose_metric("face", "toy", []) == "face"
