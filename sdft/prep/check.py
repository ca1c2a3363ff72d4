"""`sdft data check <folder | config.yaml | dataset.toml>`: the dataset report and a crop preview, without training.

Prints counts per concept, image sizes, buckets, captions and problems (unreadable files, duplicates, ignored files,
images that will be upscaled), and writes a PNG where each image is shown with the region that will be trained on
(red box) and its bucket. Exit code: 0 fine, 1 problems that would stop training, 2 bad arguments or config.
"""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError
from PIL import Image, ImageDraw

from sdft.atomic import atomic_path
from sdft.config import DataConfig
from sdft.data.datamodule import DatasetReport, DreamBoothDataModule
from sdft.data.folders import data_settings
from sdft.data.images import crop_box, load_rgb
from sdft.errors import ConfigError, SdftError

THUMB = 128


def load_data_config(source: str, prompt: str | None = None, overrides: list[str] | None = None):
    """A data config from a folder, a kohya TOML, or a YAML (a data group file or a whole run config)."""
    path = Path(source).expanduser()
    if path.is_dir():
        cfg = {"instance_dir": str(path), "instance_prompt": prompt or path.name}
    elif path.suffix.lower() == ".toml":
        cfg = {"kohya_toml": str(path)}
    elif path.suffix.lower() in (".yaml", ".yml"):
        loaded = OmegaConf.load(path)
        cfg = loaded.get("data", loaded) if "data" in loaded else loaded
        cfg = OmegaConf.to_container(cfg, resolve=False)
        if prompt:
            cfg["instance_prompt"] = prompt
    else:
        raise SdftError(f"{source}: not a folder, a .toml (kohya dataset config) or a .yaml data config.")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(DataConfig), cfg, OmegaConf.from_dotlist(list(overrides or [])))
    except (ValidationError, ConfigKeyError) as err:  # e.g. on_bad_images=bogus: the enum's allowed values, one line
        raise ConfigError(f"data.{err.full_key}: {str(err).splitlines()[0]}") from None
    return data_settings(merged)


def report_lines(report: DatasetReport, dm: DreamBoothDataModule, settings) -> list[str]:
    lines = [
        f"Dataset: {len(report.examples)} instance images in {sum(not c.is_reg for c in report.concepts)} "
        f"concept(s), {len(report.reg_examples)} class images given as folders."
    ]
    for c in report.concepts:
        n = sum(ex.concept == c for ex in report.examples + report.reg_examples)
        cap = report.captions.get(str(c.folder))
        kind = "class" if c.is_reg else "instance"
        lines.append(
            f"  [{kind}] {c.folder}: {n} images x {c.repeats} repeats, prompt {c.prompt!r}, trigger "
            f"{c.trigger!r}, class {c.class_prompt!r}, loss weight {c.loss_weight}; "
            f"captions: {cap.line() if cap else 'n/a'}"
        )
    sizes = [ex.size for ex in report.examples]
    if sizes:
        lines.append(
            f"Sizes: smallest {min(sizes, key=lambda s: s[0] * s[1])}, largest "
            f"{max(sizes, key=lambda s: s[0] * s[1])} (w, h)"
        )
    mode = "aspect buckets" if settings.enable_bucket else "square crops"
    default = " (SD 1.x's native size; an SDXL base trains at 1024: --set resolution=1024)"
    native = default if settings.resolution is None else ""
    per_resolution = dm.resolution_counts()
    if len(per_resolution) > 1:  # multi-resolution data: buckets per resolution
        lines.append(f"Training sizes ({mode}, multi-resolution; grids at {dm.cfg.resolution}{native}):")
        for r, n in per_resolution.items():
            lines.append(f"  resolution {r}: {n} images")
            for bucket, count in dm.bucket_counts(r).items():
                lines.append(f"    {bucket[0]}x{bucket[1]}: {count} images")
    else:
        lines.append(f"Training sizes ({mode}, resolution {dm.cfg.resolution}{native}):")
        for bucket, count in dm.bucket_counts().items():
            lines.append(f"  {bucket[0]}x{bucket[1]}: {count} images")
    samples = sum(ex.repeats for ex in dm.instances)
    lines.append(
        f"Epoch: {samples} instance samples (repeats included) in {len(dm.sampler())} batches of up to "
        f"{settings.batch_size}" + (" (+ as many class samples)" if dm.classes else "")
    )
    problems = []
    for path, why in report.bad:
        problems.append(f"  unreadable: {path}: {why}")
    for group in report.duplicates:
        problems.append(f"  identical files: {', '.join(str(p) for p in group)}")
    for path in report.ignored:
        problems.append(f"  ignored (not an image): {path}")
    for ex, b in zip(dm.instances, dm.buckets):
        if max(b[0] / ex.size[0], b[1] / ex.size[1]) > 1:
            problems.append(f"  upscaled: {ex.path} ({ex.size[0]}x{ex.size[1]} -> {b[0]}x{b[1]})")
    for folder, cap in report.captions.items():
        if cap.found == 0 and cap.others:
            problems.append(f"  no {cap.extension} captions in {folder} but {', '.join(cap.others)} files exist")
    lines.append(f"Problems: {len(problems) or 'none'}")
    return lines + problems


def write_preview(dm: DreamBoothDataModule, out: Path, background, limit: int = 64) -> Path:
    """A grid of thumbnails, each with the training crop outlined in red and its bucket written below."""
    items = list(zip(dm.instances, dm.buckets))[:limit]
    cols = min(8, max(1, len(items)))
    rows = math.ceil(len(items) / cols)
    cell_h = THUMB + 14
    sheet = Image.new("RGB", (cols * THUMB, rows * cell_h), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for k, (ex, bucket) in enumerate(items):
        img = load_rgb(ex.path, tuple(background), target=(THUMB, THUMB))
        w, h = ex.size
        left, top, scale = crop_box(ex.size, bucket, center=True)
        thumb_scale = THUMB / max(w, h)
        img = img.resize((max(1, round(w * thumb_scale)), max(1, round(h * thumb_scale))))
        x0, y0 = (k % cols) * THUMB, (k // cols) * cell_h
        ox, oy = x0 + (THUMB - img.size[0]) // 2, y0 + (THUMB - img.size[1]) // 2
        sheet.paste(img, (ox, oy))
        f = thumb_scale / scale  # resized-image coordinates -> thumbnail coordinates
        box = (ox + left * f, oy + top * f, ox + (left + bucket[0]) * f - 1, oy + (top + bucket[1]) * f - 1)
        draw.rectangle(box, outline=(255, 0, 0), width=2)
        draw.text((x0 + 2, y0 + THUMB), f"{bucket[0]}x{bucket[1]} {ex.path.name[:12]}", fill=(255, 255, 255))
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out


if __name__ == "__main__":  # the command line moved to sdft/cli/ (issue 27)
    from sdft.errors import command_moved

    command_moved("sdft.prep.check", "sdft data check")
