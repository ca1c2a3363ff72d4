#!/usr/bin/env python3
"""Procedurally draw the bundled example subject ("sks character").

This is a standalone script (numpy + Pillow only) that generates the small
DreamBooth training set used by the quickstart.  The subject is a cartoon
character with a fixed identity:

* a round orange face with a dark-orange outline,
* a blue five-pointed star mark on its left cheek (the right side of the image),
* a spiky green hair tuft with three points,
* big white eyes with dark pupils and a white highlight,
* a purple shirt with one horizontal yellow stripe across the chest.

Only nuisance factors vary between images: pose (offset, rotation, scale,
arm positions), background, lighting and expression (mouth shape).

Output (all deterministic for a given ``--seed``; PNGs carry no metadata):

    <out>/face/face_XX.png + .txt   8 face close-ups, 128x128
    <out>/body/body_XX.png + .txt   8 half-body shots, 128x128 except one
                                    128x160 (WxH, portrait) and one 160x128
    <out>/README.md

Regenerate the committed copy with::

    python datasets/make_example_subject.py

"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageChops, ImageDraw

DEFAULT_SEED = 7
DEFAULT_OUT = Path(__file__).resolve().parent / "example_subject"
SS = 4  # supersampling factor: draw at 4x, downsample with LANCZOS

IDENTIFIER = "sks character"
CLASS_NOUN = "character"

RGB = Tuple[int, int, int]

# --- identity: these never change -------------------------------------------
SKIN = (242, 140, 40)
SKIN_LINE = (140, 62, 8)
NOSE = (214, 105, 22)
HAIR = (58, 176, 66)
HAIR_LINE = (22, 96, 30)
STAR = (36, 92, 232)
STAR_LINE = (14, 40, 130)
EYE_WHITE = (255, 255, 255)
PUPIL = (30, 22, 18)
SHIRT = (122, 46, 168)
SHIRT_LINE = (60, 18, 90)
STRIPE = (255, 212, 30)
MOUTH = (120, 20, 30)
TONGUE = (236, 96, 110)
TEETH = (255, 255, 250)

# --- nuisance factors ---------------------------------------------------------
FACE_BACKGROUNDS: List[Tuple[str, RGB]] = [
    ("light blue", (170, 210, 240)),
    ("pale pink", (244, 196, 210)),
    ("mint green", (180, 232, 200)),
    ("cream", (246, 236, 206)),
    ("lavender", (214, 200, 240)),
    ("light grey", (206, 206, 210)),
    ("peach", (250, 206, 170)),
    ("pale yellow", (248, 240, 160)),
]

# One expression per face image (fixed order so all of them appear).
FACE_EXPRESSIONS = [
    "smiling",
    "grinning",
    "laughing",
    "neutral expression",
    "surprised",
    "smirking",
    "frowning",
    "smiling",
]

# (pose caption, left arm pose, right arm pose); "left"/"right" are image sides.
# An arm pose is (upper-arm angle, forearm angle) in degrees, 0 = pointing
# outwards horizontally, 90 = straight down, -90 = straight up.
BODY_POSES: List[Tuple[str, Tuple[float, float], Tuple[float, float]]] = [
    ("standing", (78, 88), (78, 88)),
    ("waving", (78, 88), (-15, -80)),
    ("arms raised", (-50, -75), (-50, -75)),
    ("hands on hips", (55, 140), (55, 140)),
    ("pointing to the side", (5, 0), (80, 90)),
    ("shrugging", (70, -20), (70, -20)),
    ("waving", (-15, -80), (80, 88)),
    ("standing", (80, 92), (76, 86)),
]

BODY_SCENES = ["park", "beach", "room", "brick", "night", "snow", "city", "studio"]
SCENE_CAPTIONS = {
    "park": "in a park",
    "beach": "on a beach",
    "room": "in a living room",
    "brick": "in front of a brick wall",
    "night": "outdoors at night",
    "snow": "in the snow",
    "city": "in a city street",
    "studio": "on a plain white background",
}

# Output canvas sizes (width, height) of the body images.
BODY_SIZES = [(128, 128)] * 6 + [(128, 160), (160, 128)]


# --- small geometry helpers ---------------------------------------------------
def _star_points(cx: float, cy: float, r_out: float, r_in: float, rot_deg: float):
    pts = []
    for i in range(10):
        r = r_out if i % 2 == 0 else r_in
        a = math.radians(rot_deg - 90 + 36 * i)
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def _box(cx: float, cy: float, rx: float, ry: float):
    return [cx - rx, cy - ry, cx + rx, cy + ry]


def _rotate(pt, centre, deg):
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    x, y = pt[0] - centre[0], pt[1] - centre[1]
    return (centre[0] + c * x - s * y, centre[1] + s * x + c * y)


# --- the character ------------------------------------------------------------
def _draw_mouth(d: ImageDraw.ImageDraw, cx: float, cy: float, R: float, expr: str):
    lw = max(1, round(0.045 * R))
    if expr == "smiling":
        d.arc(_box(cx, cy - 0.12 * R, 0.28 * R, 0.2 * R), 20, 160, fill=MOUTH, width=lw)
    elif expr == "grinning":
        box = _box(cx, cy - 0.1 * R, 0.3 * R, 0.24 * R)
        d.chord(box, 0, 180, fill=MOUTH, outline=SKIN_LINE, width=lw)
        # a band of teeth along the top edge
        d.rectangle([cx - 0.27 * R, cy - 0.1 * R, cx + 0.27 * R, cy - 0.02 * R], fill=TEETH)
        d.line([(cx - 0.3 * R, cy - 0.1 * R), (cx + 0.3 * R, cy - 0.1 * R)], fill=SKIN_LINE, width=lw)
    elif expr == "laughing":
        box = _box(cx, cy - 0.12 * R, 0.3 * R, 0.34 * R)
        d.chord(box, 0, 180, fill=MOUTH, outline=SKIN_LINE, width=lw)
        d.chord(_box(cx, cy + 0.16 * R, 0.16 * R, 0.08 * R), 180, 360, fill=TONGUE)
    elif expr == "neutral expression":
        d.line([(cx - 0.18 * R, cy), (cx + 0.18 * R, cy)], fill=MOUTH, width=lw)
    elif expr == "surprised":
        d.ellipse(_box(cx, cy + 0.02 * R, 0.1 * R, 0.13 * R), fill=MOUTH, outline=SKIN_LINE, width=lw)
    elif expr == "smirking":
        d.arc(_box(cx + 0.08 * R, cy - 0.16 * R, 0.22 * R, 0.18 * R), 30, 110, fill=MOUTH, width=lw)
        d.line([(cx - 0.18 * R, cy + 0.02 * R), (cx + 0.02 * R, cy + 0.02 * R)], fill=MOUTH, width=lw)
    elif expr == "frowning":
        d.arc(_box(cx, cy + 0.12 * R, 0.22 * R, 0.14 * R), 200, 340, fill=MOUTH, width=lw)
    else:  # pragma: no cover - guarded by the fixed lists above
        raise ValueError(expr)


def _draw_head(layer: Image.Image, cx: float, cy: float, R: float, expr: str, gaze: Tuple[float, float]):
    d = ImageDraw.Draw(layer)
    lw = max(1, round(0.05 * R))
    # face
    d.ellipse(_box(cx, cy, R, 0.95 * R), fill=SKIN, outline=SKIN_LINE, width=lw)
    # hair tuft: three green spikes sitting on top of the head
    hair = [
        (cx - 0.46 * R, cy - 0.78 * R),
        (cx - 0.44 * R, cy - 1.32 * R),
        (cx - 0.17 * R, cy - 1.0 * R),
        (cx + 0.02 * R, cy - 1.52 * R),
        (cx + 0.19 * R, cy - 1.0 * R),
        (cx + 0.46 * R, cy - 1.28 * R),
        (cx + 0.46 * R, cy - 0.78 * R),
        (cx + 0.25 * R, cy - 0.62 * R),
        (cx, cy - 0.58 * R),
        (cx - 0.25 * R, cy - 0.62 * R),
    ]
    d.polygon(hair, fill=HAIR, outline=HAIR_LINE, width=lw)
    # big eyes
    gx, gy = gaze
    for side in (-1, 1):
        ex, ey = cx + side * 0.36 * R, cy - 0.1 * R
        d.ellipse(_box(ex, ey, 0.22 * R, 0.28 * R), fill=EYE_WHITE, outline=SKIN_LINE, width=lw)
        px, py = ex + gx * 0.07 * R, ey + 0.04 * R + gy * 0.08 * R
        d.ellipse(_box(px, py, 0.12 * R, 0.13 * R), fill=PUPIL)
        d.ellipse(_box(px - 0.045 * R, py - 0.055 * R, 0.045 * R, 0.045 * R), fill=EYE_WHITE)
    # nose
    d.ellipse(_box(cx, cy + 0.2 * R, 0.07 * R, 0.05 * R), fill=NOSE)
    # the blue star mark on the character's left cheek (image right)
    star = _star_points(cx + 0.6 * R, cy + 0.32 * R, 0.18 * R, 0.075 * R, 8)
    d.polygon(star, fill=STAR, outline=STAR_LINE, width=max(1, lw // 2))
    _draw_mouth(d, cx, cy + 0.52 * R, R, expr)


def _arm_points(shoulder, upper_deg, fore_deg, length, side):
    """side = -1 for the image-left arm, +1 for the image-right arm."""
    a1, a2 = math.radians(upper_deg), math.radians(fore_deg)
    elbow = (shoulder[0] + side * length * math.cos(a1), shoulder[1] + length * math.sin(a1))
    hand = (elbow[0] + side * length * math.cos(a2), elbow[1] + length * math.sin(a2))
    return elbow, hand


def _draw_character(
    size: Tuple[int, int], cx: float, cy: float, R: float, expr: str, gaze: Tuple[float, float], arms, head_tilt: float
) -> Image.Image:
    """Return an RGBA layer (at supersampled resolution) with the character."""
    W, H = size
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    lw = max(1, round(0.05 * R))
    top = cy + 0.95 * R  # shoulders line

    # torso (a rounded block extending below the frame) as a mask
    mask = Image.new("L", size, 0)
    md = ImageDraw.Draw(mask)
    md.rounded_rectangle([cx - 0.95 * R, top, cx + 0.95 * R, top + 6.0 * R], radius=round(0.45 * R), fill=255)
    outline = Image.new("L", size, 0)
    ImageDraw.Draw(outline).rounded_rectangle(
        [cx - 0.95 * R - lw, top - lw, cx + 0.95 * R + lw, top + 6.0 * R + lw], radius=round(0.45 * R) + lw, fill=255
    )
    layer.paste(SHIRT_LINE + (255,), (0, 0), outline)
    layer.paste(SHIRT + (255,), (0, 0), mask)
    band = Image.new("L", size, 0)
    ImageDraw.Draw(band).rectangle([0, top + 0.62 * R, W, top + 0.9 * R], fill=255)
    layer.paste(STRIPE + (255,), (0, 0), ImageChops.multiply(band, mask))
    # collar / neck
    d.chord(_box(cx, top, 0.34 * R, 0.2 * R), 0, 180, fill=SKIN, outline=SKIN_LINE, width=lw)

    # arms: purple sleeves, orange hands
    arm_w = round(0.36 * R)
    length = 0.8 * R
    hands = []
    for side, (upper, fore) in ((-1, arms[0]), (1, arms[1])):
        shoulder = (cx + side * 0.78 * R, top + 0.3 * R)
        elbow, hand = _arm_points(shoulder, upper, fore, length, side)
        pts = [shoulder, elbow, hand]
        d.line(pts, fill=SHIRT_LINE, width=arm_w + 2 * lw, joint="curve")
        for p in pts:
            d.ellipse(_box(p[0], p[1], arm_w / 2 + lw, arm_w / 2 + lw), fill=SHIRT_LINE)
        d.line(pts, fill=SHIRT, width=arm_w, joint="curve")
        for p in pts[:2]:
            d.ellipse(_box(p[0], p[1], arm_w / 2, arm_w / 2), fill=SHIRT)
        hands.append(hand)
    for hx, hy in hands:
        d.ellipse(_box(hx, hy, 0.2 * R, 0.2 * R), fill=SKIN, outline=SKIN_LINE, width=lw)

    # head on its own layer so it can tilt independently
    head = Image.new("RGBA", size, (0, 0, 0, 0))
    _draw_head(head, cx, cy, R, expr, gaze)
    if head_tilt:
        head = head.convert("RGBa").rotate(head_tilt, resample=Image.BICUBIC, center=(cx, cy + 0.9 * R)).convert("RGBA")
    layer.alpha_composite(head)
    return layer


# --- backgrounds --------------------------------------------------------------
def _vertical_gradient(size, c_top: RGB, c_bottom: RGB) -> Image.Image:
    W, H = size
    t = (np.arange(H, dtype=np.float64) / max(1, H - 1))[:, None, None]
    a, b = np.array(c_top, np.float64), np.array(c_bottom, np.float64)
    col = np.rint(a + (b - a) * t).astype(np.uint8)
    return Image.fromarray(np.repeat(col, W, axis=1), "RGB")


def _scene(name: str, size, rng: random.Random) -> Image.Image:
    W, H = size
    if name == "park":
        img = _vertical_gradient(size, (120, 180, 240), (200, 230, 250))
        d = ImageDraw.Draw(img)
        hz = H * rng.uniform(0.6, 0.7)
        d.rectangle([0, hz, W, H], fill=(96, 170, 70))
        tx = W * rng.choice([0.12, 0.88])
        d.rectangle([tx - 0.03 * W, hz - 0.22 * H, tx + 0.03 * W, hz + 0.04 * H], fill=(110, 72, 40))
        d.ellipse(_box(tx, hz - 0.3 * H, 0.13 * W, 0.14 * H), fill=(40, 120, 50))
        d.ellipse(_box(W * 0.8 if tx < W / 2 else W * 0.2, H * 0.12, 0.06 * W, 0.06 * W), fill=(255, 236, 120))
    elif name == "beach":
        img = _vertical_gradient(size, (110, 190, 245), (190, 225, 250))
        d = ImageDraw.Draw(img)
        d.rectangle([0, H * 0.55, W, H * 0.7], fill=(40, 120, 200))
        d.rectangle([0, H * 0.7, W, H], fill=(240, 214, 150))
        d.ellipse(_box(W * 0.85, H * 0.12, 0.07 * W, 0.07 * W), fill=(255, 240, 130))
    elif name == "room":
        wall = rng.choice([(232, 220, 196), (214, 226, 214), (236, 214, 206)])
        img = Image.new("RGB", size, wall)
        d = ImageDraw.Draw(img)
        d.rectangle([0, H * 0.75, W, H], fill=(150, 100, 62))
        wx = W * rng.choice([0.08, 0.62])
        d.rectangle([wx, H * 0.12, wx + 0.3 * W, H * 0.45], fill=(250, 250, 250))
        d.rectangle([wx + 0.02 * W, H * 0.14, wx + 0.28 * W, H * 0.43], fill=(160, 210, 245))
        d.line([(wx + 0.15 * W, H * 0.12), (wx + 0.15 * W, H * 0.45)], fill=(250, 250, 250), width=SS * 2)
    elif name == "brick":
        img = Image.new("RGB", size, (200, 190, 180))
        d = ImageDraw.Draw(img)
        bh, bw = H / 10, W / 5
        for row in range(11):
            off = (bw / 2) * (row % 2)
            for col in range(-1, 7):
                x0, y0 = col * bw + off, row * bh
                shade = rng.randint(-12, 12)
                d.rectangle(
                    [x0 + SS, y0 + SS, x0 + bw - SS, y0 + bh - SS], fill=(172 + shade, 70 + shade // 2, 52 + shade // 2)
                )
    elif name == "night":
        img = _vertical_gradient(size, (14, 20, 60), (40, 50, 110))
        d = ImageDraw.Draw(img)
        for _ in range(30):
            x, y = rng.uniform(0, W), rng.uniform(0, H * 0.6)
            r = rng.uniform(0.6, 1.4) * SS
            d.ellipse(_box(x, y, r, r), fill=(255, 255, 220))
        d.ellipse(_box(W * 0.14, H * 0.14, 0.08 * W, 0.08 * W), fill=(250, 245, 210))
        d.rectangle([0, H * 0.8, W, H], fill=(24, 48, 36))
    elif name == "snow":
        img = _vertical_gradient(size, (190, 212, 232), (225, 235, 245))
        d = ImageDraw.Draw(img)
        d.ellipse([-0.3 * W, H * 0.62, 1.3 * W, H * 1.5], fill=(250, 252, 255))
        for _ in range(40):
            x, y = rng.uniform(0, W), rng.uniform(0, H)
            r = rng.uniform(0.6, 1.2) * SS
            d.ellipse(_box(x, y, r, r), fill=(255, 255, 255))
    elif name == "city":
        img = _vertical_gradient(size, (150, 190, 230), (220, 225, 235))
        d = ImageDraw.Draw(img)
        x = -rng.uniform(0, 0.1 * W)
        while x < W:
            bw = rng.uniform(0.14, 0.24) * W
            bh = rng.uniform(0.35, 0.75) * H
            g = rng.randint(110, 160)
            d.rectangle([x, H - bh, x + bw, H], fill=(g, g, g + 10))
            for wy in np.arange(H - bh + 0.05 * H, H - 0.05 * H, 0.08 * H):
                for wx in np.arange(x + 0.03 * W, x + bw - 0.05 * W, 0.06 * W):
                    d.rectangle([wx, wy, wx + 0.025 * W, wy + 0.035 * H], fill=(240, 230, 170))
            x += bw + rng.uniform(0.0, 0.03) * W
        d.rectangle([0, H * 0.9, W, H], fill=(90, 90, 96))
    elif name == "studio":
        img = _vertical_gradient(size, (250, 250, 250), (226, 226, 230))
    else:  # pragma: no cover
        raise ValueError(name)
    return img


# --- compositing, lighting, saving ---------------------------------------------
def _lighting(img: Image.Image, rng: random.Random) -> Image.Image:
    """Multiply by a soft linear light gradient and a slight colour tint."""
    arr = np.asarray(img, dtype=np.float64)
    H, W = arr.shape[:2]
    ang = math.radians(rng.uniform(0, 360))
    # round coefficients so results do not depend on libm's last bits
    gx = round(math.cos(ang) * rng.uniform(0.06, 0.16), 4)
    gy = round(math.sin(ang) * rng.uniform(0.06, 0.16), 4)
    base = round(rng.uniform(0.9, 1.06), 4)
    tint = np.array([round(1 + rng.uniform(-0.04, 0.04), 4) for _ in range(3)])
    ys = (np.arange(H, dtype=np.float64) / (H - 1) * 2 - 1)[:, None]
    xs = (np.arange(W, dtype=np.float64) / (W - 1) * 2 - 1)[None, :]
    f = base + gx * xs + gy * ys
    out = arr * f[:, :, None] * tint[None, None, :]
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


def _render(out_size, bg: Image.Image, cx, cy, R, expr, gaze, arms, head_tilt, rot, rng: random.Random) -> Image.Image:
    big = (out_size[0] * SS, out_size[1] * SS)
    char = _draw_character(big, cx, cy, R, expr, gaze, arms, head_tilt)
    if rot:
        char = char.convert("RGBa").rotate(rot, resample=Image.BICUBIC, center=(cx, cy + R)).convert("RGBA")
    canvas = bg.convert("RGBA")
    canvas.alpha_composite(char)
    small = canvas.convert("RGB").resize(out_size, Image.LANCZOS)
    return _lighting(small, rng)


def _save_png(img: Image.Image, path: Path) -> None:
    img.save(path, format="PNG", pnginfo=None, optimize=False, compress_level=9)


def _write_text(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8"))


def make_face_images(rng: random.Random) -> List[Tuple[str, Image.Image, str]]:
    bgs = list(FACE_BACKGROUNDS)
    rng.shuffle(bgs)
    items = []
    S = 128
    for i in range(8):
        bg_name, bg_col = bgs[i]
        expr = FACE_EXPRESSIONS[i]
        scale = rng.uniform(0.9, 1.04)
        R = 0.35 * S * SS * scale
        cx = S * SS * (0.5 + rng.uniform(-0.05, 0.05))
        cy = S * SS * (0.56 + rng.uniform(-0.025, 0.03))
        rot = rng.uniform(-10, 10)
        gaze = (rng.uniform(-1, 1), rng.uniform(-0.6, 0.6))
        bg = Image.new("RGB", (S * SS, S * SS), bg_col)
        img = _render((S, S), bg, cx, cy, R, expr, gaze, ((78, 88), (78, 88)), 0.0, rot, rng)
        caption = f"photo of {IDENTIFIER}, face close-up, {expr}, on a {bg_name} background"
        items.append((f"face_{i:02d}", img, caption))
    return items


def make_body_images(rng: random.Random) -> List[Tuple[str, Image.Image, str]]:
    scenes = list(BODY_SCENES)
    rng.shuffle(scenes)
    body_exprs = [
        "smiling",
        "grinning",
        "laughing",
        "smiling",
        "neutral expression",
        "smiling",
        "surprised",
        "grinning",
    ]
    items = []
    for i in range(8):
        W, H = BODY_SIZES[i]
        pose_name, left, right = BODY_POSES[i]
        scene = scenes[i]
        scale = rng.uniform(0.92, 1.06)
        ref = min(W, H)
        R = 0.19 * ref * SS * scale
        # landscape: put the character off-centre; portrait: lower in frame
        if W > H:
            cx = W * SS * rng.choice([0.33, 0.67])
        else:
            cx = W * SS * (0.5 + rng.uniform(-0.07, 0.07))
        cy = H * SS * (0.34 + rng.uniform(-0.02, 0.02))
        if H > W:
            cy = H * SS * 0.36
        rot = rng.uniform(-5, 5)
        tilt = rng.uniform(-8, 8)
        gaze = (rng.uniform(-1, 1), rng.uniform(-0.5, 0.5))
        bg = _scene(scene, (W * SS, H * SS), rng)
        img = _render((W, H), bg, cx, cy, R, body_exprs[i], gaze, (left, right), tilt, rot, rng)
        caption = f"photo of {IDENTIFIER}, half-body, {pose_name}, {SCENE_CAPTIONS[scene]}"
        items.append((f"body_{i:02d}", img, caption))
    return items


README_TEMPLATE = """\
# Example subject: "sks character"

A tiny DreamBooth training set used by the quickstart. It is **procedurally
drawn** (no photos, no third-party artwork) by `datasets/make_example_subject.py`
with seed {seed}, using only numpy and Pillow.

- identifier: `sks character` (instance prompt `photo of sks character`)
- class: `character` (class prompt `photo of a character`)

The character always has: a round orange face, a blue five-pointed star on its
left cheek (right side of the image), a spiky three-pointed green hair tuft, big
eyes, and a purple shirt with a yellow stripe across the chest. Pose, scale,
rotation, expression, background and lighting vary between images.

| folder  | images | size (WxH) | content |
| ------- | ------ | ---------- | ------- |
| `face/` | 8 | 128x128 | face close-ups |
| `body/` | 8 | 128x128 (6), 128x160, 160x128 | half-body shots |

Every `NAME.png` has a caption `NAME.txt`, e.g.
`photo of sks character, face close-up, smiling, on a light blue background`.

Regenerate (byte-identical output; `tests/test_example_subject.py` checks that
this folder matches a fresh generation):

```
python datasets/make_example_subject.py            # writes datasets/example_subject/
python datasets/make_example_subject.py --out DIR --seed {seed}
```
"""


def generate(out_dir: Path | str = DEFAULT_OUT, seed: int = DEFAULT_SEED) -> Dict[str, List[Path]]:
    """Write the example subject into ``out_dir``; return the written files."""
    out = Path(out_dir)
    written: Dict[str, List[Path]] = {"images": [], "captions": [], "other": []}
    rng = random.Random(seed)
    face_rng = random.Random(rng.random())
    body_rng = random.Random(rng.random())
    for sub, items in (("face", make_face_images(face_rng)), ("body", make_body_images(body_rng))):
        d = out / sub
        d.mkdir(parents=True, exist_ok=True)
        for stem, img, caption in items:
            p = d / f"{stem}.png"
            _save_png(img, p)
            t = d / f"{stem}.txt"
            _write_text(t, caption + "\n")
            written["images"].append(p)
            written["captions"].append(t)
    readme = out / "README.md"
    _write_text(readme, README_TEMPLATE.format(seed=seed))
    written["other"].append(readme)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default: {DEFAULT_SEED})")
    args = ap.parse_args(argv)
    written = generate(args.out, args.seed)
    total = sum(p.stat().st_size for p in written["images"])
    print(f"wrote {len(written['images'])} images ({total / 1024:.1f} KiB) + captions to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
