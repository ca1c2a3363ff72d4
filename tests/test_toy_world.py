"""The toy world: scenes, captions and their tokens, the detector (>= 95 % per attribute), and the bundled subject."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from sdft.models.toy_arch import toy_tokenizer
from sdft.toy.detector import accuracy, colour_histogram, detect, subject_distance
from sdft.toy.world import (
    ATTRIBUTES,
    BACKGROUNDS,
    CLASSES,
    COLOURS,
    PATTERNS,
    Scene,
    random_scene,
    render,
    write_dataset,
)

ROOT = Path(__file__).resolve().parents[1]
SUBJECT_SCRIPT = ROOT / "datasets" / "make_toy_subject.py"
SUBJECT_DIR = ROOT / "datasets" / "toy_subject"


def test_render_is_deterministic_and_sized():
    scene = Scene("dog", "red", "green", "spots", "gray", True)
    a, b = render(scene, seed=3), render(scene, seed=3)
    assert a.size == (32, 32) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes()
    assert render(scene, seed=4).tobytes() != a.tobytes()


def test_every_caption_word_is_one_token():
    tokenizer = toy_tokenizer()
    rng = random.Random(0)
    for _ in range(50):
        caption = random_scene(rng).caption()
        tokens = tokenizer.tokenize(caption)
        assert tokens == [w + "</w>" for w in caption.split()], caption


def test_dataset_files_have_captions(tmp_path):
    paths = write_dataset(tmp_path, 5, seed=1)
    assert len(paths) == 5
    for p in paths:
        caption = p.with_suffix(".txt").read_text().strip()
        assert caption.startswith("a ") and any(f" {c}" in caption for c in CLASSES), caption


def test_captions_name_parts_and_patterns_and_can_leave_them_out():
    scene = Scene("dog", "blue", "yellow", "spots", "pink")
    assert scene.caption() == "a blue dog with a yellow head and spots on a pink background"
    assert scene.caption(frozenset({"second"})) == "a blue dog with spots on a pink background"
    assert scene.caption(frozenset({"colour", "background"})) == "a dog with a yellow head and spots"
    assert scene.caption(frozenset(ATTRIBUTES)) == "a dog"
    assert Scene("car", "red", "green").caption(frozenset({"background"})) == "a plain red car with a green roof"


def test_parts_always_differ_in_colour_and_every_value_occurs():
    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(400)]
    assert all(s.colour != s.second for s in scenes)
    for attr, values in (
        ("cls", CLASSES),
        ("colour", COLOURS),
        ("second", COLOURS),
        ("pattern", PATTERNS),
        ("background", BACKGROUNDS),
    ):
        assert {getattr(s, attr) for s in scenes} == set(values), attr


def test_detector_reads_every_attribute_of_world_images():
    """The card's figure (sdft/toy/MODEL_CARD.md): per-attribute accuracy on 1000 jittered world images."""
    acc = accuracy(400, seed=5)
    assert min(acc.values()) >= 0.95, acc


def test_detector_reads_the_dog_attributes_exactly():
    """Dogs are what the learning test reads: every dog look, both directions, every background."""
    misses = []
    for colour in COLOURS:
        for second in (c for c in COLOURS if c != colour):
            for i, pattern in enumerate(PATTERNS):
                scene = Scene("dog", colour, second, pattern, list(BACKGROUNDS)[i % 4 - (colour == "red")], i % 2 == 0)
                found = detect(render(scene, seed=i)).attributes()
                if any(found[a] != getattr(scene, a) for a in found):
                    misses.append((scene, found))
    assert len(misses) <= 1, misses[:3]


def test_detector_finds_nothing_in_a_blank_image():
    blank = np.full((32, 32, 3), 240, dtype=np.uint8)
    d = detect(blank)
    assert d.background == "white" and d.cls is None and d.colour is None and d.pattern is None
    assert colour_histogram(blank).sum() == 0


def test_colour_histogram_distance_tells_the_subject_from_other_dogs():
    from PIL import Image

    subject = [Image.open(p).convert("RGB") for p in sorted(SUBJECT_DIR.glob("*.png"))]
    others = [render(Scene("dog", c, "green" if c != "green" else "red"), seed=i) for i, c in enumerate(COLOURS)]
    assert subject_distance(subject, subject) < 0.3 < 1.0 < subject_distance(others, subject)


def _subject_module():
    spec = importlib.util.spec_from_file_location("make_toy_subject", SUBJECT_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    old, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = old
    return mod


def test_committed_toy_subject_matches_a_fresh_generation(tmp_path):
    written = _subject_module().generate(tmp_path)
    names = sorted(p.name for p in written)
    assert names == sorted(p.name for p in SUBJECT_DIR.iterdir()), "run: python datasets/make_toy_subject.py"
    stale = [n for n in names if (tmp_path / n).read_bytes() != (SUBJECT_DIR / n).read_bytes()]
    assert not stale, f"datasets/toy_subject is out of date ({stale}); run: python datasets/make_toy_subject.py"
    for txt in SUBJECT_DIR.glob("*.txt"):
        assert "sks dog" in txt.read_text()


def test_subject_is_one_dog_of_the_world_read_exactly_by_the_detector():
    from PIL import Image

    from sdft.toy.measure import subject_attributes

    subject = [Image.open(p).convert("RGB") for p in sorted(SUBJECT_DIR.glob("*.png"))]
    assert len(subject) == 8
    found = [detect(im).attributes() for im in subject]
    assert all(
        f["cls"] == "dog" and f["colour"] == "blue" and f["second"] == "yellow" and f["pattern"] == "spots"
        for f in found
    ), found
    assert len({f["background"] for f in found}) == 4
    assert subject_attributes(subject) == {"cls": "dog", "colour": "blue", "second": "yellow", "pattern": "spots"}


@pytest.mark.parametrize("cls", CLASSES)
def test_each_class_is_told_apart_from_the_others(cls):
    found = {
        detect(render(Scene(cls, c, "yellow" if c != "yellow" else "red", p, b), seed=1)).cls
        for c in COLOURS
        for b in ("white", "black")
        for p in PATTERNS
    }
    assert found == {cls}
