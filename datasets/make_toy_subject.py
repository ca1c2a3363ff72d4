#!/usr/bin/env python3
"""Draw the quickstart's toy-world subject, "sks dog": one particular dog of the toy world.

One dog of the world: a blue body, a yellow head and yellow spots (a combination the base model can draw when
prompted with all three, but has never seen under an identifier). Background and facing direction vary between its 8
images. 32x32 PNGs with world-style captions, deterministic (Pillow only, no torch). Regenerate the committed copy with:

    python datasets/make_toy_subject.py            # writes datasets/toy_subject/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sdft.toy.world import Scene, render  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "toy_subject"
IDENTIFIER = "sks dog"
SUBJECT = Scene("dog", "blue", "yellow", "spots")  # body, head (and spots), pattern: what must be learned
# (background, flip): the nuisance factors of each image
POSES = [
    ("white", False),
    ("gray", True),
    ("black", False),
    ("pink", True),
    ("white", True),
    ("gray", False),
    ("pink", False),
    ("black", True),
]


def subject_images() -> list[tuple[str, object, str]]:
    """(stem, image, caption) for each of the subject's images."""
    items = []
    for i, (background, flip) in enumerate(POSES):
        scene = Scene(SUBJECT.cls, SUBJECT.colour, SUBJECT.second, SUBJECT.pattern, background, flip)
        image = render(scene, seed=100 + i)
        caption = scene.caption().replace(" dog ", " sks dog ", 1)
        items.append((f"sks_dog_{i:02d}", image, caption))
    return items


README = """# Toy subject: "sks dog"

The quickstart's DreamBooth subject, drawn by `datasets/make_toy_subject.py` in the toy world of the `model=toy` base
(sdft/toy/MODEL_CARD.md). World dogs come in every combination of body colour, head colour and pattern; this
individual has a **blue body, a yellow head and yellow spots**, on four backgrounds, facing either way. 8 images,
32x32, each with a caption such as `a blue sks dog with a yellow head and spots on a white background`.

- identifier `sks dog` (instance prompt `a sks dog`), class prompt `a dog`
- regenerate: `python datasets/make_toy_subject.py` (byte-identical; tests/test_toy_world.py checks it)
"""


def generate(out: Path | str = DEFAULT_OUT) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, image, caption in subject_images():
        image.save(out / f"{stem}.png", compress_level=9)
        (out / f"{stem}.txt").write_bytes((caption + "\n").encode("utf-8"))
        written += [out / f"{stem}.png", out / f"{stem}.txt"]
    (out / "README.md").write_bytes(README.encode("utf-8"))
    return written + [out / "README.md"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    print(f"wrote {len(generate(args.out))} files to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
