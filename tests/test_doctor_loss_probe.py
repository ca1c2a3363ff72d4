"""`sdft data doctor --loss-probe N` (issue 29): a short run on the toy base over toy-world renders and one real photo
(skimage's astronaut, unlike anything the toy base knows); the photo's per-image loss at fixed noise stands out."""

from __future__ import annotations

import json

import pytest
from helpers.config import CONF_DIR
from helpers.photos import astronaut

from sdft.cli import main
from sdft.prep.doctor.loss_probe import outliers
from sdft.toy.world import write_dataset


def test_outliers_by_robust_z_score():
    losses = {f"p{i}": 0.2 + 0.01 * (i % 3) for i in range(8)} | {"odd": 0.5}
    assert set(outliers(losses)) == {"odd"}
    assert outliers({"a": 0.2, "b": 0.21, "c": 0.2}) == {}


@pytest.mark.slow
def test_loss_probe_names_the_photo_among_toy_renders(tmp_path):
    root = tmp_path / "toy"
    write_dataset(root, 7, seed=0)
    astronaut().resize((32, 32)).save(root / "astro.png")
    (root / "astro.txt").write_text("a person", encoding="utf-8")
    args = ["data", "doctor", "--config-name", "config", "--config-dir", str(CONF_DIR), "model=toy"]
    args += [f"data.instance_dir={root}", "data.instance_prompt=toy", "data.resolution=32", "trainer.accelerator=cpu"]
    assert main(args + ["--loss-probe", "3", "--no-faces", "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    probe = [f for f in report["findings"] if f["check"] == "loss probe"]
    losses = next(f["data"]["losses"] for f in probe if f["severity"] == "info")
    assert len(losses) == 8 and max(losses, key=losses.get).endswith("astro.png")
    assert [f["files"] for f in probe if f["severity"] == "warn"] == [[str(root / "astro.png")]]
    assert (
        not (root / "lora").exists()
        and sorted(p.name for p in root.iterdir() if p.suffix == ".png")[-1] == "toy_00006.png"
    )
