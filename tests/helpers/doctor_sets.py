"""Datasets for `sdft data doctor` from real photos that ship in packages (scikit-image's data photos, matplotlib's
Grace Hopper portrait, the toy world's renders), each defect planted in a known file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from helpers.photos import astronaut, canvas
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

LONG = " ".join(["a woman in an orange flight suit standing in front of the flag"] * 9)  # ~110 tokens


def grace() -> Image.Image:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return Image.open(f).convert("RGB")


def skimage_photo(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


def write_clean(folder: Path) -> list[Path]:
    """Distinct real photos, no planted defect: one person each at most, sharp, well exposed, large enough."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = {"astronaut": astronaut(), "grace": grace()}
    photos |= {n: skimage_photo(n) for n in ("coffee", "chelsea", "rocket", "camera", "brick", "gravel", "coins")}
    paths = []
    for name, img in photos.items():
        paths.append(folder / f"{name}.png")
        img.save(paths[-1])
    return paths


def write_defects(root: Path) -> dict[str, Path]:
    """A kohya tree: `10_sks woman` (the astronaut, with every defect planted once), `1_ohwx cat` (two photos: the
    balance defect) and a class folder with one image. Captions say `sks woman`, except where a defect is planted."""
    person, cat, reg = root / "10_sks woman", root / "1_ohwx cat", root / "reg" / "1_woman"
    for folder in (person, cat, reg):
        folder.mkdir(parents=True, exist_ok=True)
    a = astronaut()
    files: dict[str, Path] = {}

    def save(key: str, img: Image.Image, caption: str | None, folder: Path = person, ext: str = "png") -> None:
        files[key] = folder / f"{key}.{ext}"
        img.save(files[key], **({"quality": 70} if ext == "jpg" else {}))
        if caption is not None:
            files[key].with_suffix(".txt").write_text(caption, encoding="utf-8")

    # the subject, four good shots (distinct enough not to be near-duplicates), captions sharing "orange suit"
    save("face", a, "photo of sks woman in an orange suit, smiling")
    save("flip", ImageOps.mirror(a.crop((40, 0, 512, 472))).resize((512, 512)), "sks woman, orange suit, flag")
    save(
        "warm",
        ImageEnhance.Color(a.crop((100, 20, 400, 320))).enhance(1.6).resize((512, 512)),
        "sks woman, orange suit, warm light",
    )
    save(
        "tilt", a.rotate(12, resample=Image.BICUBIC, fillcolor=(90, 90, 90)), "sks woman, orange suit, flag"
    )  # same caption as flip
    # duplicates: a byte copy, and a smaller JPEG re-save (near-duplicate)
    shutil.copyfile(files["face"], person / "face_copy.png")
    shutil.copyfile(files["face"].with_suffix(".txt"), person / "face_copy.txt")
    files["face_copy"] = person / "face_copy.png"
    save("resaved", a.resize((480, 480)), "sks woman in an orange suit, resaved", ext="jpg")
    (person / "broken.jpg").write_bytes(files["resaved"].read_bytes()[:3000])  # truncated
    files["broken"] = person / "broken.jpg"
    # identity: another person
    save("grace", grace(), "sks woman in an orange suit")
    # quality
    save("blurry", a.filter(ImageFilter.GaussianBlur(6)), "sks woman in an orange suit, blurry")
    save("dark", ImageEnhance.Brightness(a).enhance(0.12), "sks woman in an orange suit, dark")
    save("bright", ImageEnhance.Brightness(a).enhance(3.5), "sks woman in an orange suit, bright")
    save("small", a.resize((160, 160), Image.LANCZOS), "sks woman in an orange suit, small")
    save("wide", canvas((1536, 448), [(448, (544, 0))]), "sks woman in an orange suit, panorama")
    # faces
    save("two", canvas((1024, 512), [(512, (0, 0)), (512, (512, 0))]), "sks woman in an orange suit, twice")
    save("far", canvas((1200, 900), [(320, (500, 400))]), "sks woman in an orange suit, far away")
    save("noface", Image.fromarray(np.asarray(a)[300:]).resize((768, 318)), "sks woman in an orange suit, body")
    # captions
    save("nocaption", a.crop((0, 0, 400, 400)).resize((512, 512)), None)
    save("notrigger", a.crop((60, 0, 512, 452)).resize((512, 512)), "a woman in an orange suit")
    save("long", a.crop((0, 60, 452, 512)).resize((512, 512)), "sks woman " + LONG)
    # balance: a second concept with two photos x 1 repeat, one class image
    save("cat1", skimage_photo("chelsea").resize((768, 512)), "ohwx cat on a table", folder=cat)
    save(
        "cat2",
        skimage_photo("chelsea").crop((0, 0, 300, 300)).resize((512, 512)).transpose(Image.ROTATE_90),
        "ohwx cat",
        folder=cat,
    )
    save("reg1", skimage_photo("camera").resize((512, 512)), None, folder=reg)
    return files
