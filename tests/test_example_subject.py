"""The bundled example subject: generator output and the committed copy."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "datasets" / "make_example_subject.py"
COMMITTED = REPO / "datasets" / "example_subject"

FACE_STEMS = [f"face/face_{i:02d}" for i in range(8)]
BODY_STEMS = [f"body/body_{i:02d}" for i in range(8)]
EXPECTED_SIZES = {
    **{s: (128, 128) for s in FACE_STEMS},
    **{s: (128, 128) for s in BODY_STEMS[:6]},
    BODY_STEMS[6]: (128, 160),
    BODY_STEMS[7]: (160, 128),
}
EXPECTED_FILES = sorted([f"{s}.png" for s in EXPECTED_SIZES] + [f"{s}.txt" for s in EXPECTED_SIZES] + ["README.md"])


def _load_module():
    spec = importlib.util.spec_from_file_location("make_example_subject", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclass/annotation machinery may look it up
    old, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no datasets/__pycache__
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = old
    return mod


@pytest.fixture(scope="module")
def gen():
    return _load_module()


@pytest.fixture(scope="module")
def generated(gen, tmp_path_factory):
    out = tmp_path_factory.mktemp("example_subject")
    gen.generate(out)
    return out


def _listing(root: Path):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _png_chunks(path: Path):
    """Chunk types of a PNG: no text/time metadata means nothing but pixels."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    types, i = [], 8
    while i < len(data):
        n = int.from_bytes(data[i : i + 4], "big")
        t = data[i + 4 : i + 8].decode("ascii")
        if not types or types[-1] != t:
            types.append(t)
        i += 12 + n
    return types


def test_script_does_not_need_torch():
    src = SCRIPT.read_text()
    assert "import torch" not in src and "from torch" not in src


def test_expected_files(generated):
    assert _listing(generated) == EXPECTED_FILES


def test_images_sizes_and_captions(generated):
    for stem, size in EXPECTED_SIZES.items():
        with Image.open(generated / f"{stem}.png") as im:
            assert im.format == "PNG"
            assert im.mode == "RGB"
            assert im.size == size, stem
        assert _png_chunks(generated / f"{stem}.png") == ["IHDR", "IDAT", "IEND"], stem
        caption = (generated / f"{stem}.txt").read_text(encoding="utf-8").strip()
        assert caption and "sks character" in caption, stem
        kind = "face close-up" if stem.startswith("face/") else "half-body"
        assert kind in caption, (stem, caption)


def test_total_image_size_is_small(generated):
    total = sum(p.stat().st_size for p in generated.rglob("*.png"))
    assert total < 600 * 1024, total


def test_images_are_not_all_the_same(generated):
    blobs = {(generated / f"{s}.png").read_bytes() for s in EXPECTED_SIZES}
    assert len(blobs) == len(EXPECTED_SIZES)


def test_regeneration_is_byte_identical(gen, generated, tmp_path):
    gen.generate(tmp_path)
    assert _listing(tmp_path) == _listing(generated)
    for rel in _listing(generated):
        assert (tmp_path / rel).read_bytes() == (generated / rel).read_bytes(), rel


def test_seed_changes_output(gen, generated, tmp_path):
    gen.generate(tmp_path, seed=gen.DEFAULT_SEED + 1)
    rel = "face/face_00.png"
    assert (tmp_path / rel).read_bytes() != (generated / rel).read_bytes()


def test_cli(tmp_path):
    import subprocess

    out = tmp_path / "cli"
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--seed", "7"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert _listing(out) == EXPECTED_FILES


def test_committed_copy_matches_fresh_generation(generated):
    assert COMMITTED.is_dir(), "run: python datasets/make_example_subject.py"
    assert _listing(COMMITTED) == _listing(generated)
    stale = [rel for rel in _listing(generated) if (COMMITTED / rel).read_bytes() != (generated / rel).read_bytes()]
    assert not stale, (
        f"datasets/example_subject/ is out of date ({stale}); regenerate with: python datasets/make_example_subject.py"
    )
