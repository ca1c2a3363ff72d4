"""The toy world: scenes, captions and their tokens, the detector, and the bundled toy subject."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from sdft.toy.arch import toy_tokenizer
from sdft.toy.detector import colour_histogram, detect, subject_distance
from sdft.toy.world import ATTRIBUTES, CLASSES, COLOURS, Scene, random_scene, render, write_dataset

ROOT = Path(__file__).resolve().parents[1]
SUBJECT_SCRIPT = ROOT / "datasets" / "make_toy_subject.py"
SUBJECT_DIR = ROOT / "datasets" / "toy_subject"


def test_render_is_deterministic_and_sized():
    scene = Scene("dog", "red", "gray", "small", "left", True)
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


def test_captions_can_leave_attributes_out():
    scene = Scene("car", "blue", "pink", "small", "right")
    assert scene.caption() == "a small blue car at the right on a pink background"
    assert scene.caption(frozenset({"size", "position"})) == "a blue car on a pink background"
    assert scene.caption(frozenset(ATTRIBUTES)) == "a car"


def test_detector_reads_world_images():
    rng = random.Random(5)
    scenes = [random_scene(rng) for _ in range(120)]
    found = [detect(render(s, seed=i)) for i, s in enumerate(scenes)]
    colour = np.mean([d.colour == s.colour for d, s in zip(found, scenes)])
    cls = np.mean([d.cls == s.cls for d, s in zip(found, scenes)])
    bg = np.mean([d.background == s.background for d, s in zip(found, scenes)])
    assert colour >= 0.98 and cls >= 0.98 and bg == 1.0, (colour, cls, bg)


def test_detector_finds_nothing_in_a_blank_image():
    blank = np.full((32, 32, 3), 240, dtype=np.uint8)
    d = detect(blank)
    assert d.background == "white" and d.colour is None and d.cls is None
    assert colour_histogram(blank).sum() == 0


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


def test_subject_is_a_dog_unlike_the_world_dogs():
    from PIL import Image

    subject = [Image.open(p).convert("RGB") for p in sorted(SUBJECT_DIR.glob("*.png"))]
    assert len(subject) == 8
    assert all(detect(im).cls == "dog" for im in subject)
    world_dogs = [render(Scene("dog", c, "white"), seed=i) for i, c in enumerate(COLOURS)]
    own = subject_distance(subject, subject)
    others = subject_distance(world_dogs, subject)
    assert own < 0.2 and others > 0.8, (own, others)  # histograms: L1 distance in [0, 2]


@pytest.mark.parametrize("cls", CLASSES)
def test_each_class_is_told_apart_from_the_others(cls):
    found = {detect(render(Scene(cls, c, b), seed=1)).cls for c in COLOURS for b in ("white", "black")}
    assert found == {cls}
