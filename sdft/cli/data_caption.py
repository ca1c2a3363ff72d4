"""`sdft data caption DIR --model M`: write a caption file next to each image, from a BLIP / GIT / Florence-2 model
(transformers) or a WD14-style tagger (.onnx + tags CSV, onnxruntime), with the trigger word inserted first.

The command line only; the work is in sdft/prep/caption.py."""

from __future__ import annotations

import argparse

from sdft.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="folder of images; captions are written next to them")
    parser.add_argument(
        "--model",
        required=True,
        help="a local folder or hub id (online) of a BLIP / GIT / Florence-2 model in transformers "
        "format, or a WD14 tagger: a folder with model.onnx + selected_tags.csv, or an .onnx",
    )
    parser.add_argument(
        "--kind",
        choices=["auto", "tagger", "transformers"],
        default="auto",
        help="what --model is (default: tell from the files)",
    )
    parser.add_argument("--trigger", default=None, help="trigger word(s) put first in every caption (e.g. 'sks')")
    parser.add_argument("--threshold", type=float, default=0.35, help="tagger: general tag threshold (0.35)")
    parser.add_argument(
        "--character-threshold", type=float, default=0.85, help="tagger: character tag threshold (0.85)"
    )
    parser.add_argument("--exclude-tags", default="", help="tagger: comma-separated tags never written")
    parser.add_argument("--max-tags", type=int, default=None, help="tagger: keep at most this many tags")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="captioner: caption length limit (40)")
    parser.add_argument("--num-beams", type=int, default=3, help="captioner: beam search width (3)")
    parser.add_argument("--task", default=None, help="Florence-2 task token (default <MORE_DETAILED_CAPTION>)")
    parser.add_argument("--caption-extension", default=".txt", help="caption file extension (default .txt)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing captions (default: keep them)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (4)")
    parser.add_argument("--no-recursive", dest="recursive", action="store_false", help="ignore sub-folders")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")


def run_from_args(args: argparse.Namespace) -> int:
    from sdft.data.images import check_folder, list_images, no_images_error
    from sdft.prep.caption import caption_folder

    from sdft.prep.caption_models import load_captioner

    if args.batch_size < 1 or not 0 <= args.threshold <= 1 or not 0 <= args.character_threshold <= 1:
        raise ConfigError("--batch-size must be >= 1 and the thresholds within 0..1.")
    folder = check_folder(args.folder, "sdft data caption")
    if not list_images(folder, args.recursive):  # before loading a model
        raise no_images_error(folder, args.recursive, "sdft data caption")
    captioner = load_captioner(
        args.model, args.kind, args.device, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, task=args.task
    )
    exclude = {t.strip() for t in args.exclude_tags.split(",") if t.strip()}
    result = caption_folder(
        args.folder,
        captioner,
        args.trigger,
        args.caption_extension,
        args.overwrite,
        args.recursive,
        args.batch_size,
        args.threshold,
        args.character_threshold,
        exclude,
        args.max_tags,
    )
    print(
        f"{captioner.name}: wrote {len(result['written'])} captions, kept {len(result['kept'])} existing "
        f"(--overwrite replaces them), {len(result['unreadable'])} unreadable images skipped."
    )
    for path in result["unreadable"]:
        print(f"  unreadable: {path}")
    return 0
