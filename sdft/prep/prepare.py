"""`sdft data prepare IN OUT`: face close-ups and half-body crops from a folder of photos, ready for
`+experiment=dual_phase` (OUT/face/, OUT/body/, captions copied), with a report and a contact sheet in OUT.

Per image: detect faces (sdft.prep.faces), frame crops from the largest face (sdft.prep.framing), resize them to
the target size (Lanczos, or a spandrel model for images that must grow: sdft.prep.upscale), optionally write a
mask per image (sdft.prep.masks). Nothing is written into IN.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sdft.atomic import atomic_path
from sdft.data.captions import caption_path
from sdft.prep.faces import main_faces, make_detector
from sdft.prep.framing import MIN_SUBJECT, body_crop, face_crop, fraction, subject_box
from sdft.data.images import MASK_SUFFIX, check_folder, list_images, load_rgb, no_images_error, scan_images
from sdft.prep.prepare_report import write_reports
from sdft.prep.upscale import make_resizer
from sdft.errors import ConfigError
from sdft.prep.prepare_options import SETS, PrepareOptions

log = logging.getLogger(__name__)

TOO_TIGHT = 0.6  # a crop the frame shrinks below this share of its wanted size is not written


@dataclass
class Output:
    set: str
    file: str
    crop: tuple[float, float, float, float]
    size: tuple[int, int]
    upscaled: float | None  # the scale factor when the crop had to grow
    mask: str | None = None


@dataclass
class ImageResult:
    file: str
    size: tuple[int, int] | None
    faces: int = 0
    face: tuple[float, float, float, float] | None = None
    subject_fraction: float | None = None
    outputs: list[Output] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # set -> why it was not written
    warnings: list[str] = field(default_factory=list)
    caption: bool = False  # a caption file was copied next to the outputs


def check_paths(src: Path, out: Path, opts: PrepareOptions) -> None:
    src_r, out_r = src.resolve(), out.resolve()
    if out_r == src_r or src_r in out_r.parents:
        raise ConfigError(
            f"output folder {out} is inside the input folder {src}: choose a folder outside it "
            "(prepare never writes into your images' folder)."
        )
    for name in opts.sets:
        folder = out / name
        if folder.is_dir() and list_images(folder) and not opts.overwrite:
            raise ConfigError(
                f"{folder} already holds images: choose an empty output folder, or pass --overwrite "
                "(files of the same name are replaced, others are left)."
            )
    unknown = set(opts.sets) - set(SETS)
    if unknown or not opts.sets:
        raise ConfigError(f"--sets {','.join(opts.sets)}: choose from {', '.join(SETS)}.")
    if opts.masks not in (None, "subject", "face"):
        raise ConfigError(f"--masks {opts.masks}: choose subject or face.")
    if opts.several_faces not in ("largest", "skip"):
        raise ConfigError(f"--several-faces {opts.several_faces}: choose largest or skip.")


def output_names(paths: list[Path], src: Path) -> dict[Path, str]:
    """A unique flat stem per image: sub-folders joined with '__'; a clash (a.jpg, a.png) gets the extension."""
    names, seen = {}, set()
    for p in paths:
        name = "__".join(p.relative_to(src).with_suffix("").parts)
        if name in seen:
            name = f"{name}_{p.suffix[1:].lower()}"
        seen.add(name)
        names[p] = name
    return names


def save_atomic(img: Image.Image, path: Path, fmt: str) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="JPEG" if fmt == "jpg" else fmt.upper(), **({"quality": 95} if fmt == "jpg" else {}))


class Preparer:
    """Holds the detector and the resizer (loaded once) and writes one image's sets."""

    def __init__(self, out: Path, opts: PrepareOptions):
        self.out, self.opts = out, opts
        self.detector = make_detector(opts.face_model)
        self.resizer = make_resizer(opts.upscaler, opts.device)

    def write(self, img: Image.Image, crop, out_size, set_name: str, name: str, mask: Image.Image | None) -> Output:
        box = tuple(round(float(v), 1) for v in crop)
        region = img.crop(tuple(round(v) for v in box))
        factor = max(out_size[0] / region.size[0], out_size[1] / region.size[1])
        resized = (
            self.resizer.resize(region, out_size)
            if factor > 1.0 + 1e-6
            else region.resize(out_size, Image.Resampling.LANCZOS)
        )
        folder = self.out / set_name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.{self.opts.image_format}"
        save_atomic(resized, path, self.opts.image_format)
        result = Output(
            set_name, str(path.relative_to(self.out)), box, out_size, round(factor, 3) if factor > 1.0 + 1e-6 else None
        )
        if mask is not None:
            from sdft.prep.masks import crop_mask

            mask_path = folder / f"{name}{MASK_SUFFIX}"
            save_atomic(crop_mask(mask, box, out_size), mask_path, "png")
            result.mask = str(mask_path.relative_to(self.out))
        return result

    def process(self, path: Path, name: str, rel: str, size: tuple[int, int]) -> ImageResult:
        opts = self.opts
        res = ImageResult(rel, size)
        img = load_rgb(path)
        faces = main_faces(self.detector.detect(np.asarray(img)))
        res.faces = len(faces)
        face = faces[0] if faces else None
        person = None
        if face is not None:
            res.face = tuple(round(float(v), 1) for v in (face.x, face.y, face.w, face.h))
            person = subject_box(face, img.size)
            res.subject_fraction = round(fraction(person, img.size), 3)
            if res.subject_fraction < MIN_SUBJECT:
                res.warnings.append(f"subject fills ~{res.subject_fraction:.0%} of the frame (< 50 %)")
        if not faces:
            res.warnings.append("no face found")
        elif len(faces) > 1:
            res.warnings.append(
                f"{len(faces)} faces"
                + (": the largest is used" if opts.several_faces == "largest" else ": skipped (--several-faces skip)")
            )
        usable = face is not None and (len(faces) == 1 or opts.several_faces == "largest")
        mask = None
        if opts.masks and face is not None:
            from sdft.prep.masks import make_mask

            mask = make_mask(opts.masks, img, face, person)
        for set_name in opts.sets:
            if set_name == "full":
                w, h = img.size
                grow = max(1.0, opts.full_min_side / min(w, h))
                out_size = (round(w * grow), round(h * grow))
                res.outputs.append(self.write(img, (0, 0, w, h), out_size, "full", name, mask))
                continue
            if not usable:
                res.skipped[set_name] = "no face" if face is None else "several faces"
                continue
            out_size = opts.face_size if set_name == "face" else opts.body_size
            aspect = out_size[0] / out_size[1]
            crop = (
                face_crop(face, img.size, aspect, opts.face_margin)
                if set_name == "face"
                else body_crop(face, img.size, aspect, opts.body_heads)
            )
            if crop.tight < TOO_TIGHT:
                res.skipped[set_name] = f"the frame is too tight for a {set_name} crop ({crop.tight:.0%} of it fits)"
                continue
            res.outputs.append(self.write(img, crop.box, out_size, set_name, name, mask))
        return res


def copy_caption(src_image: Path, out: Path, outputs: list[Output], extension: str) -> bool:
    cap = caption_path(src_image, extension)
    if not cap.is_file():
        return False
    for o in outputs:
        dest = out / o.file
        shutil.copyfile(cap, caption_path(dest, extension))
    return True


def prepare(src: str | Path, out: str | Path, opts: PrepareOptions | None = None) -> dict:
    """Write the sets, the report (report.md, report.json) and preview.png into `out`; return the report dict."""
    opts = opts or PrepareOptions()
    src = check_folder(src, "sdft data prepare")
    out = Path(out).expanduser()
    check_paths(src, out, opts)
    paths = list_images(src, opts.recursive)
    if not paths:
        raise no_images_error(src, opts.recursive, "sdft data prepare")
    scan = scan_images(paths)
    preparer = Preparer(out, opts)  # loads the detector / upscaler: errors before any image is written
    out.mkdir(parents=True, exist_ok=True)
    names = output_names(paths, src)
    results = []
    for path in paths:
        rel = str(path.relative_to(src))
        if path not in scan.sizes:
            why = dict(scan.bad).get(path, "unreadable")
            results.append(ImageResult(rel, None, warnings=[f"unreadable: {why}"]))
            continue
        res = preparer.process(path, names[path], rel, scan.sizes[path])
        res.caption = copy_caption(path, out, res.outputs, opts.caption_extension)
        results.append(res)
        for warning in res.warnings:
            log.warning("%s: %s", rel, warning)
    return write_reports(src, out, opts, results, preparer)
