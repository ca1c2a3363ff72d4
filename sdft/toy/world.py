"""The toy world: procedurally drawn 32 px scenes of one object with a caption that names everything in it.

Four classes (person, dog, car, house) drawn as simple shapes, six object colours, four background colours, two
sizes and three horizontal positions. numpy + Pillow only; every image is a pure function of its seed.

    python -m sdft.toy.world --out outputs/toy_world --count 3000     # images NAME.png + captions NAME.txt
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

RESOLUTION = 32
SS = 4  # drawn at 4x, downsampled with a box filter (anti-aliased edges)

CLASSES = ("person", "dog", "car", "house")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 185),
    "orange": (245, 140, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240),
    "gray": (128, 128, 128),
    "black": (25, 25, 25),
    "pink": (250, 185, 205),
}
SIZES = {"small": 0.55, "big": 0.9}  # object height (or width, if wider) as a fraction of the frame
POSITIONS = {"left": -1, "middle": 0, "right": 1}
POSITION_WORDS = {"left": "at the left", "middle": "in the middle", "right": "at the right"}
DARK = (50, 50, 55)  # wheels, doors, windows
WORDS = ("left", "right", "middle", "spots", "spotted", "marking", "markings", "toyworld")  # beyond PROMPT_WORDS

RGB = tuple[int, int, int]
ATTRIBUTES = ("size", "colour", "position", "background")
OMIT_PROB = 0.3  # per attribute and caption: "a dog" is then in distribution (any dog), as a class prompt needs


@dataclass(frozen=True)
class Scene:
    """Everything an image shows; `caption()` names it."""

    cls: str
    colour: str
    background: str = "white"
    size: str = "big"
    position: str = "middle"
    flip: bool = False  # dogs and cars face left or right

    def caption(self, omit: frozenset[str] = frozenset()) -> str:
        """`a big red dog at the left on a white background`; attributes in `omit` (size, colour, position,
        background) are left out, so that shorter prompts such as `a dog` mean any dog."""
        words = ["a", self.size, self.colour, self.cls, POSITION_WORDS[self.position], f"on a {self.background} background"]
        keep = [w for w, a in zip(words, ("", "size", "colour", "", "position", "background")) if a not in omit]
        return " ".join(keep)


def _shade(c: RGB, f: float) -> RGB:
    return tuple(int(max(0, min(255, v * f))) for v in c)  # type: ignore[return-value]


def draw_shape(d: ImageDraw.ImageDraw, cls: str, box: tuple[float, float, float, float], body: RGB,
               flip: bool = False, accent: RGB | None = None) -> None:
    """Draw one object of `cls` filling `box` (x0, y0, x1, y1). `accent` colours a dog's head and spots."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0

    def X(u: float) -> float:  # u in [0, 1] along the width, mirrored when flipped
        return x0 + (1 - u if flip else u) * w

    def rect(u0, v0, u1, v1, fill):
        xa, xb = sorted((X(u0), X(u1)))
        d.rectangle([xa, y0 + v0 * h, xb, y0 + v1 * h], fill=fill)

    def ellipse(u0, v0, u1, v1, fill):
        xa, xb = sorted((X(u0), X(u1)))
        d.ellipse([xa, y0 + v0 * h, xb, y0 + v1 * h], fill=fill)

    if cls == "person":  # head, torso, arms, legs: a tall figure
        ellipse(0.3, 0.0, 0.7, 0.28, body)
        rect(0.25, 0.3, 0.75, 0.68, body)
        rect(0.05, 0.3, 0.2, 0.62, body)
        rect(0.8, 0.3, 0.95, 0.62, body)
        rect(0.28, 0.68, 0.46, 1.0, body)
        rect(0.54, 0.68, 0.72, 1.0, body)
    elif cls == "dog":  # long body on four legs, head up front, tail behind
        head = accent or body
        rect(0.15, 0.3, 0.8, 0.65, body)
        rect(0.18, 0.65, 0.3, 1.0, body)
        rect(0.62, 0.65, 0.74, 1.0, body)
        rect(0.0, 0.12, 0.12, 0.42, body)  # tail
        ellipse(0.68, 0.0, 1.0, 0.42, head)
        if accent is not None:  # markings: spots on the body
            for u, v in ((0.3, 0.38), (0.5, 0.47)):
                ellipse(u, v, u + 0.13, v + 0.16, accent)
    elif cls == "car":  # wide body, cabin with a window, two wheels
        rect(0.22, 0.15, 0.72, 0.5, body)
        rect(0.3, 0.22, 0.64, 0.44, _shade(body, 0.55))
        rect(0.0, 0.45, 1.0, 0.8, body)
        ellipse(0.1, 0.62, 0.32, 1.0, DARK)
        ellipse(0.68, 0.62, 0.9, 1.0, DARK)
    elif cls == "house":  # square walls, a darker roof, a door
        d.polygon([(x0, y0 + 0.45 * h), (x0 + 0.5 * w, y0), (x1, y0 + 0.45 * h)], fill=_shade(body, 0.6))
        rect(0.1, 0.45, 0.9, 1.0, body)
        rect(0.42, 0.68, 0.6, 1.0, DARK)
    else:
        raise ValueError(f"unknown toy class {cls!r}; known: {CLASSES}")


ASPECT = {"person": 0.6, "dog": 1.4, "car": 1.6, "house": 1.0}  # width / height


def object_box(cls: str, size: str, position: str, jitter: tuple[float, float] = (0.0, 0.0)) -> tuple[float, ...]:
    """The object's box in pixels of the 4x canvas."""
    full = RESOLUTION * SS
    extent = SIZES[size] * full
    w, h = (extent, extent / ASPECT[cls]) if ASPECT[cls] > 1 else (extent * ASPECT[cls], extent)
    room = (full - w) / 2
    cx = full / 2 + POSITIONS[position] * room * 0.85 + jitter[0] * full
    cy = full / 2 + (full - h) * 0.2 + jitter[1] * full  # objects stand a little below the middle
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def render(scene: Scene, seed: int = 0, accent: RGB | None = None, body: RGB | None = None) -> Image.Image:
    """The scene as a 32x32 RGB image; `seed` jitters position and shade slightly."""
    rng = random.Random(seed)
    full = RESOLUTION * SS
    img = Image.new("RGB", (full, full), BACKGROUNDS[scene.background])
    colour = body or _shade(COLOURS[scene.colour], rng.uniform(0.92, 1.05))
    jitter = (rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03))
    draw_shape(ImageDraw.Draw(img), scene.cls, object_box(scene.cls, scene.size, scene.position, jitter), colour,
               scene.flip, accent)
    return img.resize((RESOLUTION, RESOLUTION), Image.BOX)


def random_scene(rng: random.Random) -> Scene:
    return Scene(rng.choice(CLASSES), rng.choice(list(COLOURS)), rng.choice(list(BACKGROUNDS)),
                 rng.choice(list(SIZES)), rng.choice(list(POSITIONS)), rng.random() < 0.5)


def write_dataset(out: Path | str, count: int, seed: int = 0, omit_prob: float = OMIT_PROB) -> list[Path]:
    """`count` images NAME.png with captions NAME.txt in `out` (a flat folder the trainer reads); each attribute is
    left out of a caption with probability `omit_prob`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        scene = random_scene(rng)
        path = out / f"toy_{i:05d}.png"
        render(scene, seed=rng.randrange(1 << 30)).save(path, compress_level=9)
        omit = frozenset(a for a in ATTRIBUTES if rng.random() < omit_prob)
        path.with_suffix(".txt").write_text(scene.caption(omit) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write the toy-world captioned dataset.")
    ap.add_argument("--out", default="outputs/toy_world")
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    paths = write_dataset(args.out, args.count, args.seed)
    print(f"wrote {len(paths)} images + captions to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
