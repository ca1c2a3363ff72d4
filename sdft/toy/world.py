"""The toy world: procedurally drawn 32 px scenes of one object whose parts have their own colours, with a caption
that names them.

Four classes (person, dog, car, house). Each object has a main colour (a dog's body, a person's shirt, a car's body, a
house's walls) and a second colour for its other part (head, trousers, roof, roof), always different from the main
one; the main part is plain or carries spots or stripes drawn in the second colour. Five colours, four backgrounds;
objects are big and centred (a slight random jitter, facing left or right), so every attribute is visible at 32 px.
numpy + Pillow only; every image is a pure function of its seed.

    sdft toy world --out outputs/toy_world --count 5000     # images NAME.png + captions NAME.txt
"""

from __future__ import annotations

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
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240),
    "gray": (128, 128, 128),
    "black": (25, 25, 25),
    "pink": (250, 185, 205),
}
PATTERNS = ("plain", "spots", "stripes")
SECOND_PART = {"person": "trousers", "dog": "head", "car": "roof", "house": "roof"}  # the part in the second colour
MAIN_PART = {"person": "shirt", "dog": "body", "car": "body", "house": "walls"}  # the part in the main colour
DARK = (50, 50, 55)  # wheels, door
SKIN = (205, 150, 115)  # a person's head
WINDOW = 0.55  # a car's window is its roof colour at this brightness
EXTENT = 0.9  # object height (or width, if wider) as a fraction of the frame
# caption words beyond sdft.models.tokenizer_vocab.PROMPT_WORDS
WORDS = ("head", "trousers", "roof", "walls", "spots", "stripes", "plain", "toyworld")

RGB = tuple[int, int, int]
ATTRIBUTES = ("colour", "second", "pattern", "background")  # what a caption may leave out
OMIT_PROB = 0.5  # per attribute and caption: "a dog" is then in distribution (any dog), as a class prompt needs


@dataclass(frozen=True)
class Scene:
    """Everything an image shows; `caption()` names it."""

    cls: str
    colour: str  # main part
    second: str  # the other part, and the spots or stripes
    pattern: str = "plain"
    background: str = "white"
    flip: bool = False  # dogs and cars face left or right (not captioned)

    def caption(self, omit: frozenset[str] = frozenset()) -> str:
        """`a blue dog with a yellow head and spots on a white background`, `a plain red car with a green roof`;
        attributes in `omit` (colour, second, pattern, background) are left out, so `a dog` means any dog."""
        words = ["a"]
        if self.pattern == "plain" and "pattern" not in omit:
            words.append("plain")
        if "colour" not in omit:
            words.append(self.colour)
        words.append(self.cls)
        if "second" not in omit:
            words += ["with", "a", self.second, SECOND_PART[self.cls]]
        if self.pattern != "plain" and "pattern" not in omit:
            words += ["and" if "second" not in omit else "with", self.pattern]
        if "background" not in omit:
            words += ["on", "a", self.background, "background"]
        return " ".join(words)


def _shade(c: RGB, f: float) -> RGB:
    return tuple(int(max(0, min(255, v * f))) for v in c)  # type: ignore[return-value]


# where the spots or stripes go, in the object's box (u0, v0, u1, v1): on the main part
PATTERN_AREA = {
    "person": (0.27, 0.33, 0.73, 0.66),
    "dog": (0.17, 0.31, 0.66, 0.64),
    "car": (0.14, 0.43, 0.86, 0.74),
    "house": (0.2, 0.52, 0.8, 0.96),
}
SPOT_U = (0.17, 0.5, 0.83)  # three spots across the area, at mid height
STRIPE_V = ((0.0, 0.3), (0.7, 1.0))  # two bands along the area, top and bottom


def draw_shape(
    d: ImageDraw.ImageDraw,
    cls: str,
    box: tuple[float, float, float, float],
    main: RGB,
    second: RGB,
    pattern: str = "plain",
    flip: bool = False,
) -> None:
    """Draw one object of `cls` filling `box` (x0, y0, x1, y1) on the 4x canvas."""
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

    def wheels():
        ellipse(0.1, 0.64, 0.32, 1.0, DARK)
        ellipse(0.68, 0.64, 0.9, 1.0, DARK)

    if cls == "person":  # head, shirt with arms, trousers: a tall figure
        ellipse(0.3, 0.0, 0.7, 0.28, SKIN)
        rect(0.25, 0.3, 0.75, 0.68, main)
        rect(0.05, 0.3, 0.2, 0.62, main)
        rect(0.8, 0.3, 0.95, 0.62, main)
        rect(0.26, 0.68, 0.47, 1.0, second)
        rect(0.53, 0.68, 0.74, 1.0, second)
    elif cls == "dog":  # long body on four legs, head up front, tail behind
        rect(0.15, 0.3, 0.8, 0.65, main)
        rect(0.18, 0.65, 0.3, 1.0, main)
        rect(0.62, 0.65, 0.74, 1.0, main)
        rect(0.0, 0.12, 0.12, 0.42, main)  # tail
        ellipse(0.66, 0.0, 1.0, 0.46, second)
    elif cls == "car":  # roof (cabin with a window), wide body, two wheels
        rect(0.2, 0.05, 0.74, 0.45, second)
        rect(0.28, 0.13, 0.66, 0.38, _shade(second, WINDOW))
        rect(0.0, 0.38, 1.0, 0.8, main)
        wheels()
    elif cls == "house":  # a roof in the second colour, walls, a door
        d.polygon([(x0 - 0.02 * w, y0 + 0.47 * h), (x0 + 0.5 * w, y0), (x1 + 0.02 * w, y0 + 0.47 * h)], fill=second)
        rect(0.1, 0.45, 0.9, 1.0, main)
        rect(0.44, 0.72, 0.58, 1.0, DARK)
    else:
        raise ValueError(f"unknown toy class {cls!r}; known: {CLASSES}")
    if pattern == "plain":
        return
    a0, b0, a1, b1 = PATTERN_AREA[cls]
    aw, ah = a1 - a0, b1 - b0
    if pattern == "spots":
        for u in SPOT_U:
            ellipse(a0 + (u - 0.11) * aw, b0 + 0.2 * ah, a0 + (u + 0.11) * aw, b0 + 0.8 * ah, second)
    elif pattern == "stripes":
        for v0, v1 in STRIPE_V:
            rect(a0, b0 + v0 * ah, a1, b0 + v1 * ah, second)
    else:
        raise ValueError(f"unknown pattern {pattern!r}; known: {PATTERNS}")
    if cls == "house":  # the door and the wheels stay in front of the pattern
        rect(0.44, 0.72, 0.58, 1.0, DARK)
    elif cls == "car":
        wheels()


ASPECT = {"person": 0.6, "dog": 1.4, "car": 1.25, "house": 1.0}  # width / height


def object_box(cls: str, jitter: tuple[float, float] = (0.0, 0.0)) -> tuple[float, ...]:
    """The object's box in pixels of the 4x canvas: centred a little below the middle, shifted by `jitter`."""
    full = RESOLUTION * SS
    extent = EXTENT * full
    w, h = (extent, extent / ASPECT[cls]) if ASPECT[cls] > 1 else (extent * ASPECT[cls], extent)
    cx = full / 2 + jitter[0] * full
    cy = full / 2 + (full - h) * 0.2 + jitter[1] * full
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def render(scene: Scene, seed: int = 0, jitter: bool = True) -> Image.Image:
    """The scene as a 32x32 RGB image; `seed` jitters position and shade slightly (none with `jitter=False`)."""
    rng = random.Random(seed)
    shade = rng.uniform(0.92, 1.05) if jitter else 1.0
    offset = (rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)) if jitter else (0.0, 0.0)
    full = RESOLUTION * SS
    img = Image.new("RGB", (full, full), BACKGROUNDS[scene.background])
    draw_shape(
        ImageDraw.Draw(img),
        scene.cls,
        object_box(scene.cls, offset),
        _shade(COLOURS[scene.colour], shade),
        _shade(COLOURS[scene.second], shade),
        scene.pattern,
        scene.flip,
    )
    return img.resize((RESOLUTION, RESOLUTION), Image.BOX)


def random_scene(rng: random.Random, cls: str | None = None) -> Scene:
    colour = rng.choice(list(COLOURS))
    second = rng.choice([c for c in COLOURS if c != colour])
    return Scene(
        cls or rng.choice(CLASSES),
        colour,
        second,
        rng.choice(PATTERNS),
        rng.choice(list(BACKGROUNDS)),
        rng.random() < 0.5,
    )


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


if __name__ == "__main__":  # the command line moved to sdft/cli/ (issue 27)
    from sdft.errors import command_moved

    command_moved("sdft.toy.world", "sdft toy world")
