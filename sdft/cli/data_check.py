"""`sdft data check <folder | config.yaml | dataset.toml>`: the dataset report and a crop preview, without training.

The command line only; the work is in sdft/prep/check.py."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sdft.errors import SdftError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a folder of images, a kohya dataset .toml, or a .yaml data / run config")
    parser.add_argument("--prompt", help="instance prompt for a plain folder (default: the folder's name)")
    parser.add_argument(
        "--out",
        default=None,
        help="folder for the preview (default: outputs/data_check/<source "
        "name>/, never inside the dataset: the preview must not become a training image)",
    )
    parser.add_argument("--preview", default=None, help="PNG to write (default: <out>/data_check.png)")
    parser.add_argument("--report", default=None, help="also write the report to this text file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="data config values, e.g. --set enable_bucket=true --set resolution=768",
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sdft data check", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def run_from_args(args: argparse.Namespace) -> int:
    from sdft.data.buckets import with_native_sizes
    from sdft.data.datamodule import DreamBoothDataModule, scan_dataset
    from sdft.prep.check import load_data_config, report_lines, write_preview

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        settings = load_data_config(args.source, args.prompt, args.overrides)
        report = scan_dataset(settings, on_bad="report")
        good = report.examples
        dm = DreamBoothDataModule(with_native_sizes(settings.copy()), None, good, report.reg_examples, seed=0)
        lines = report_lines(report, dm, settings)
    except (SdftError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    source = Path(args.source).expanduser()
    out = Path(args.out) if args.out else Path("outputs") / "data_check" / (source.stem or "dataset")
    preview = Path(args.preview) if args.preview else out / "data_check.png"
    write_preview(dm, preview, settings.background)
    lines.append(f"Preview: {preview}")
    text = "\n".join(lines)
    print(text)
    if args.report:
        Path(args.report).write_text(text + "\n", encoding="utf-8")
    stops = bool(report.bad) and settings.on_bad_images == "error"
    if stops:
        print(
            f"Training would stop: {len(report.bad)} unreadable file(s) (or set data.on_bad_images=skip).",
            file=sys.stderr,
        )
    return 1 if stops else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
