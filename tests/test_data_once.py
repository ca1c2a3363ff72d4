"""Each phase's dataset is worked out once (issue 19): a run decodes and hashes every image of its folders once."""

from __future__ import annotations

from collections import Counter

from helpers.config import EXAMPLE_SUBJECT

from sdft.data import datamodule, images
from sdft.data.images import list_images
from sdft.run.train import run


def test_single_phase_run_scans_its_folders_once(fast_config, monkeypatch):
    scanned, checked, hashed = Counter(), Counter(), Counter()
    real_scan, real_check, real_digest = datamodule.scan_images, images.check_image, images.file_digest

    def scan_images(paths):  # what the dataset scan is asked to look at (a memo below it would hide repeats)
        scanned.update(p.resolve() for p in paths)
        return real_scan(paths)

    def check_image(path):
        checked[path.resolve()] += 1
        return real_check(path)

    def file_digest(path):
        hashed[path.resolve()] += 1
        return real_digest(path)

    monkeypatch.setattr(datamodule, "scan_images", scan_images)
    monkeypatch.setattr(images, "check_image", check_image)
    monkeypatch.setattr(images, "file_digest", file_digest)
    # prior on: class images are made and found through the same scan (sdft/data/prior.py)
    summary = run(fast_config("prior=default", "prior.generation_steps=1", "trainer.max_steps=1"))
    instance_files = {p.resolve() for p in list_images(EXAMPLE_SUBJECT)}
    assert summary["steps"] == 1 and summary["instance_images"] == len(instance_files) > 0
    assert set(scanned) == set(checked) == set(hashed) == instance_files
    assert max(scanned.values()) == max(checked.values()) == max(hashed.values()) == 1, (scanned, checked, hashed)
