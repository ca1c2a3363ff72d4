"""Generated masks from the toy detector and the subject on busy backgrounds (sdft/toy/masks.py): the mask covers
the object the renderer drew, the loss-mask loader finds them, busy backgrounds are told from the world's plain ones."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
from PIL import Image

from sdft.data.images import list_images
from sdft.data.masks import load_mask
from sdft.errors import DataError
from sdft.toy.masks import busy_background, is_busy, subject_mask, write_busy_subject, write_masks
from sdft.toy.world import BACKGROUNDS, Scene, random_scene, render

SUBJECT = "datasets/toy_subject"


def renderer_masks(scene: Scene, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(opaque, touched) object pixels as the renderer draws them: the same on a white and a black background, and
    different from the background on either (anti-aliased edges included)."""
    on = {
        bg: np.asarray(
            render(Scene(scene.cls, scene.colour, scene.second, scene.pattern, bg, scene.flip), seed), dtype=np.float32
        )
        for bg in ("white", "black")
    }
    opaque = np.abs(on["white"] - on["black"]).sum(-1) < 30
    touched = np.zeros(opaque.shape, dtype=bool)
    for bg, arr in on.items():
        touched |= np.abs(arr - np.array(BACKGROUNDS[bg], dtype=np.float32)).sum(-1) > 10
    return opaque, touched


def test_generated_mask_covers_what_the_renderer_drew():
    rng = random.Random(3)
    for i in range(30):
        scene = random_scene(rng)
        opaque, touched = renderer_masks(scene, i)
        got = np.asarray(subject_mask(render(scene, i))) > 127
        assert not (got & ~touched).any(), scene  # never marks background
        recall = (got & opaque).sum() / opaque.sum()
        # wheels, doors (the world's dark colour) and a person's skin are no object colours: up to ~18 % of a car
        assert recall > (0.99 if scene.cls == "dog" else 0.8), (scene, recall)


def test_no_object_no_mask():
    with pytest.raises(DataError, match="finds no object"):
        subject_mask(Image.new("RGB", (32, 32), BACKGROUNDS["gray"]))


def test_masks_beside_the_images_are_what_the_loss_reads(tmp_path):
    folder = tmp_path / "subject"
    shutil.copytree(SUBJECT, folder)
    written = write_masks(folder)
    images = list_images(folder)
    assert len(written) == len(images) == 8  # the scanner never takes a mask for a training image
    for image in images:
        mask = np.asarray(load_mask(image, None))
        assert np.array_equal(mask, np.asarray(subject_mask(Image.open(image).convert("RGB"))))
        assert 0.15 < (mask > 127).mean() < 0.5


def test_busy_subject_keeps_the_subject_and_changes_the_background(tmp_path):
    paths = write_busy_subject(SUBJECT, tmp_path / "busy")
    assert len(paths) == 8 and len(list_images(tmp_path / "busy")) == 8
    for path in paths:
        source = np.asarray(Image.open(f"{SUBJECT}/{path.name}").convert("RGB"))
        busy = np.asarray(Image.open(path).convert("RGB"))
        mask = np.asarray(Image.open(path.with_name(path.stem + ".mask.png"))) > 127
        assert np.array_equal(busy[mask], source[mask]) and not np.array_equal(busy[~mask], source[~mask])
        assert is_busy(busy) and not is_busy(source)
    assert write_busy_subject(SUBJECT, tmp_path / "again")[0].read_bytes() == paths[0].read_bytes()  # deterministic


def test_world_images_are_not_busy():
    rng = random.Random(0)
    assert not any(is_busy(render(random_scene(rng), i)) for i in range(200))
    assert all(is_busy(busy_background(s)) for s in range(50))
