"""`sdft data prepare IN OUT`: face close-ups and half-body crops from a folder of photos, ready for
`+experiment=dual_phase` (OUT/face/, OUT/body/, captions copied), with a report and a contact sheet in OUT.

The command line only; the work is in sdft/prep/prepare.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdft.errors import ConfigError, DataError
from sdft.prep.prepare_options import PrepareOptions


def parse_size(text: str) -> tuple[int, int]:
    """'512' or '512x640' (width x height)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 8:
        raise ConfigError(f"size {text!r}: give WIDTHxHEIGHT in pixels (e.g. 512x640) or one number for a square.")
    return parts[0], parts[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = PrepareOptions()
    parser.add_argument("source", help="folder of photos (sub-folders too); never written to")
    parser.add_argument("output", help="output folder: face/, body/ (and full/), report.md, report.json, preview.png")
    parser.add_argument(
        "--sets",
        default=",".join(d.sets),
        help="which sets to write, comma-separated from face,body,full (default face,body; full: "
        "whole images, upscaled to --full-min-side when smaller)",
    )
    parser.add_argument("--face-size", default="512", help="face crop size, WxH or one number (default 512)")
    parser.add_argument(
        "--body-size",
        default="512",
        help="half-body crop size, WxH or one number (default 512; "
        "e.g. 512x640 for portrait crops with aspect buckets)",
    )
    parser.add_argument(
        "--full-min-side",
        type=int,
        default=d.full_min_side,
        help="full set: upscale images whose short side is below this (default 512)",
    )
    parser.add_argument(
        "--face-margin",
        type=float,
        default=d.face_margin,
        help="face crop height in detected-face heights (default 2.4: head and a little neck)",
    )
    parser.add_argument(
        "--body-heads",
        type=float,
        default=d.body_heads,
        help="half-body crop height in detected-face heights (default 5: head to about the waist)",
    )
    parser.add_argument(
        "--several-faces",
        choices=["largest", "skip"],
        default=d.several_faces,
        help="images with several similar-sized faces: crop the largest (default) or skip them",
    )
    parser.add_argument(
        "--face-model",
        default=None,
        metavar="FILE",
        help="detector file: an OpenCV cascade .xml or a YuNet .onnx (default: OpenCV's bundled "
        "frontal-face Haar cascade)",
    )
    parser.add_argument(
        "--upscaler",
        default=None,
        metavar="FILE",
        help="super-resolution weights loaded by spandrel (needs spandrel + torchvision installed); default Lanczos",
    )
    parser.add_argument(
        "--masks",
        nargs="?",
        const="subject",
        choices=["subject", "face"],
        default=None,
        help="also write <stem>.mask.png per image (white = subject): subject (GrabCut, default) "
        "or face (head ellipse)",
    )
    parser.add_argument(
        "--caption-extension", default=d.caption_extension, help="captions to copy next to the crops (default .txt)"
    )
    parser.add_argument(
        "--format",
        dest="image_format",
        choices=["png", "jpg"],
        default=d.image_format,
        help="image format written (default png)",
    )
    parser.add_argument("--no-recursive", dest="recursive", action="store_false", help="ignore sub-folders")
    parser.add_argument("--no-preview", dest="preview", action="store_false", help="do not write preview.png")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into output sets that already hold images (same names are replaced)",
    )
    parser.add_argument("--device", default="cpu", help="device for --upscaler (default cpu)")


def options_from_args(args: argparse.Namespace) -> PrepareOptions:
    return PrepareOptions(
        sets=tuple(s.strip() for s in args.sets.split(",") if s.strip()),
        face_size=parse_size(args.face_size),
        body_size=parse_size(args.body_size),
        full_min_side=args.full_min_side,
        face_margin=args.face_margin,
        body_heads=args.body_heads,
        several_faces=args.several_faces,
        face_model=args.face_model,
        upscaler=args.upscaler,
        masks=args.masks,
        caption_extension=args.caption_extension,
        image_format=args.image_format,
        recursive=args.recursive,
        overwrite=args.overwrite,
        preview=args.preview,
        device=args.device,
    )


def run_from_args(args: argparse.Namespace) -> int:
    from sdft.prep.prepare import prepare

    report = prepare(args.source, args.output, options_from_args(args))
    out = Path(args.output)
    counts = {s: sum(o["set"] == s for r in report["images"] for o in r["outputs"]) for s in report["options"]["sets"]}
    print(f"Wrote {', '.join(f'{n} images to {out / s}' for s, n in counts.items())}.")
    print(
        f"No face: {len(report['no_face'])}, several faces: {len(report['several_faces'])}, subject < 50 % of "
        f"the frame: {len(report['subject_under_half'])}, upscaled: {len(report['upscaled'])} "
        f"({report['upscaler']})."
    )
    print(
        f"Report: {out / 'report.md'} (and report.json)"
        + (f"; preview: {report['preview']}" if "preview" in report else "")
    )
    if not sum(counts.values()):  # nothing to train on: not a success (the report says why, image by image)
        raise DataError(
            f"wrote no image from the {len(report['images'])} photo(s) in {args.source}: "
            f"{len(report['no_face'])} without a detected face, {len(report['several_faces'])} with several faces, "
            f"{len(report['unreadable'])} unreadable (see {out / 'report.md'}). Photos without a findable face: "
            "--sets full, or another detector (--face-model)."
        )
    if counts.get("face") and counts.get("body"):
        print(
            f"Train: python train.py +experiment=dual_phase phases.0.overrides.data.instance_dir={out / 'face'} "
            f"phases.1.overrides.data.instance_dir={out / 'body'}"
        )
    return 0
