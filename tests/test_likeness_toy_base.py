"""The likeness meter on the toy base with a subject that is not a toy-world one (a regression: `python train.py
model=toy` with the default dataset, 128-160 px photos, crashed in the toy detector with a numpy broadcast error
after the model had loaded)."""

import pytest
from helpers.config import EXAMPLE_SUBJECT
from PIL import Image

from sdft.errors import DataError
from sdft.evaluation.likeness_scorers import ToyScorer, choose_metric
from sdft.toy.detector import detect
from sdft.toy.world import Scene, render

TOY = render(Scene("dog", "blue", "yellow", "spots", "white", False), jitter=False)


def photos():
    return [Image.open(p).convert("RGB") for p in sorted(EXAMPLE_SUBJECT.rglob("*.png"))[:3]]


def test_auto_takes_the_toy_metric_only_for_toy_world_images():
    assert choose_metric("auto", "toy", [TOY, TOY]) == "toy"
    assert {im.size for im in photos()} - {(32, 32)}  # the default dataset is not 32 px
    assert choose_metric("auto", "toy", [TOY, *photos()]) == "image"


def test_the_toy_metric_asked_for_a_photo_subject_says_what_to_use():
    with pytest.raises(DataError, match=r"callbacks\.likeness\.metric=image"):
        ToyScorer(photos())


def test_detector_reads_any_size_at_the_worlds_32_px():
    assert detect(TOY.resize((64, 64), Image.NEAREST)) == detect(TOY)
    assert detect(photos()[0]).background  # any image: a detection, not a broadcast error
