"""The spots measure: three separate spots read as spots, one band over the same positions does not (rendered
toy-world images; no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdft.toy import measure as measure_mod
from sdft.toy.detector import band_of, count_marks, detect, separate_spots, spots_accuracy
from sdft.toy.world import Scene, render

SUBJECT = {"cls": "dog", "colour": "blue", "second": "yellow", "pattern": "spots"}  # the bundled subject
GRID = Path(__file__).resolve().parents[1] / "sdft" / "toy" / "quickstart_grid.png"


@pytest.mark.parametrize("cls", ["dog", "car", "house"])
@pytest.mark.parametrize("flip", [False, True])
def test_spots_are_spots_and_a_band_is_not(cls, flip):
    for seed in range(5):
        spotted = render(Scene(cls, "blue", "yellow", "spots", "white", flip), seed=seed)
        band = band_of(spotted)
        assert detect(spotted).marks == 3 and separate_spots(detect(spotted))
        # the band still covers every spot position: the pattern attribute (fidelity) reads spots, the marks do not
        assert detect(band).pattern == "spots" and detect(band).marks == 1 and not separate_spots(detect(band))
        for pattern in ("stripes", "plain"):
            assert not separate_spots(detect(render(Scene(cls, "red", "green", pattern, "gray", flip), seed=seed)))


def test_count_marks_counts_connected_groups_of_enough_pixels():
    grid = np.zeros((4, 8), dtype=bool)
    grid[0, 0] = True  # one pixel alone: below MIN_MARK
    grid[1, [2, 3, 5, 6]] = True  # two groups of two, split by the gap at x=4
    assert count_marks(grid) == 2
    grid[1, 4] = True  # close the gap: one band
    assert count_marks(grid) == 1
    grid[2, 0] = grid[3, 1] = True  # diagonal neighbours are not connected
    assert count_marks(grid) == 1


def test_spots_accuracy_on_world_renders():
    acc = spots_accuracy(count=40, seed=1)
    for cls in ("dog", "car", "house"):
        assert min(acc[cls].values()) >= 0.9, (cls, acc[cls])
    assert acc["person"]["band"] == 1.0 and acc["person"]["stripes"] == 1.0  # a person's spots are ~1 px apart


def test_measure_reports_spots_beside_fidelity(monkeypatch):
    spotted = [render(Scene("dog", "blue", "yellow", "spots"), seed=i) for i in range(4)]
    for images, spots in ((spotted, 1.0), ([band_of(im) for im in spotted], 0.0)):
        monkeypatch.setattr(measure_mod, "sample", lambda pipe, prompts, seed, **kw: images[: len(prompts)])
        m = measure_mod.measure(object(), subject=SUBJECT, reference=[], n=4)
        assert m.fidelity == 1.0 and m.spots == spots  # fidelity cannot tell a band from spots; spots can
        assert m.row()["spots"] == spots and all("marks" in d for d in m.identifier)


def test_quickstart_grid_draws_the_spots_as_spots():
    """The shipped final grid (rows `a sks dog`, `a dog`; 4 cells of 128 px from x=200, rows from y=24 and 152).
    Issue 34 reported every identifier cell drawn as the subject with its spots smeared into one band; with the
    refined decoder (pretraining step 5) and the 300-step recipe, three of the four cells read as the subject with
    three separate spots (seed 2's purple with a band); on the base of step 6 all four do, and no class cell reads as
    the subject (the first class cell is a yellow dog with blue head and spots: the subject's colours swapped)."""
    grid = Image.open(GRID).convert("RGB")

    def cells(top):
        return [grid.crop((200 + 128 * c, top, 328 + 128 * c, top + 128)).resize((32, 32), Image.BOX) for c in range(4)]

    ident = [detect(cell) for cell in cells(24)]
    assert [measure_mod.matches(d, SUBJECT) and separate_spots(d) for d in ident] == [True, True, True, True]
    assert not any(measure_mod.matches(detect(cell), SUBJECT) for cell in cells(152))
