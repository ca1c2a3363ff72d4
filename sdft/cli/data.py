"""`sdft data check|doctor|prepare|caption`: the dataset tools' command lines (check, prepare and caption have their
options in sdft/cli/data_<tool>.py; the work lives in sdft/prep/)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdft.cli import data_caption as caption
from sdft.cli import data_check as check
from sdft.cli import data_prepare as prepare

# name -> (module with add_arguments(parser) and run_from_args(args), help)
TOOLS = {
    "check": (check, "report on a dataset and preview its crops, without training"),
    "prepare": (prepare, "face and half-body crops, upscaling, masks and a framing report"),
    "caption": (caption, "caption images with BLIP / GIT / Florence-2 or a WD14 tagger"),
}
DOCTOR_HELP = "find what will spoil a LoRA before the first step: files, duplicates, quality, faces, captions, balance"


def register(subparsers) -> None:
    """Add `check`, `doctor`, `prepare` and `caption` under `sdft data`."""
    for name, (module, help_text) in TOOLS.items():
        parser = subparsers.add_parser(name, help=help_text, description=module.__doc__.splitlines()[0])
        module.add_arguments(parser)
        parser.set_defaults(func=run_prepare if name == "prepare" else module.run_from_args)
    doctor = subparsers.add_parser("doctor", help=DOCTOR_HELP, description=DOCTOR_HELP)
    add_doctor_arguments(doctor)
    doctor.set_defaults(func=run_doctor)


def run_prepare(args: argparse.Namespace) -> int:
    """`sdft data prepare`, then the doctor on the sets it wrote (reports beside them in OUT)."""
    code = prepare.run_from_args(args)
    from sdft.prep.doctor.hooks import after_prepare

    print("\n".join(after_prepare(Path(args.output), [s.strip() for s in args.sets.split(",") if s.strip()])))
    return code


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        nargs="?",
        help="a folder of images (plain or kohya `<repeats>_<trigger> <class>` folders), a kohya dataset .toml or "
        "a .yaml data config; or leave it out and give --config-name",
    )
    parser.add_argument(
        "overrides", nargs="*", default=[], help="with --config-name: Hydra overrides, as for train.py (key=value)"
    )
    parser.add_argument("--config-name", help="a run config in conf/ (as train.py --config-name): its phases' data")
    parser.add_argument("--config-dir", default=None, help="the folder of --config-name (default ./conf)")
    parser.add_argument("--prompt", help="instance prompt for a plain folder (default: the folder's name)")
    parser.add_argument(
        "--set", dest="data_overrides", action="append", default=[], metavar="KEY=VALUE", help="data config values"
    )
    parser.add_argument(
        "--out", default=None, help="report folder (default outputs/data_doctor/<source name>/; never the dataset)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when anything severe is found")
    parser.add_argument("--no-faces", dest="faces", action="store_false", help="skip the face checks (dlib)")
    parser.add_argument(
        "--no-pixels", dest="pixels", action="store_false", help="skip blur, exposure and near-duplicates"
    )
    parser.add_argument("--tokenizer", help="a CLIP tokenizer folder or cached hub id, for exact caption token counts")
    parser.add_argument(
        "--loss-probe",
        type=int,
        default=0,
        metavar="N",
        help="also train N steps (the run config's model; default the tiny one) and name the images whose loss at "
        "fixed noise stands out",
    )
    parser.add_argument("--limit", type=int, default=40, help="findings printed (all are in the JSON / HTML)")
    parser.add_argument(
        "--move-to",
        default=None,
        metavar="DIR",
        help="move the images of severe image findings (unreadable, blur, exposure, resolution, aspect, identity; "
        "with their captions) to DIR, outside the dataset",
    )


def doctor_datasets(args: argparse.Namespace):
    from sdft.errors import ConfigError
    from sdft.prep.doctor.inputs import from_source
    from sdft.prep.doctor.run_config import compose_run_config, from_run_config

    if args.config_name:
        overrides = ([args.source] if args.source else []) + list(args.overrides)
        cfg = compose_run_config(args.config_name, overrides, args.config_dir)
        return from_run_config(cfg), cfg, args.config_name
    if not args.source:
        raise ConfigError("sdft data doctor: give a dataset (folder, .toml, .yaml) or --config-name NAME.")
    if args.overrides:
        raise ConfigError(
            f"{args.overrides}: key=value overrides need --config-name; for a folder use --set KEY=VALUE."
        )
    return [from_source(args.source, args.prompt, args.data_overrides)], None, Path(args.source).stem


def run_doctor(args: argparse.Namespace) -> int:
    from sdft.errors import ConfigError
    from sdft.prep.doctor.html import write_html
    from sdft.prep.doctor.report import text_lines, write_json
    from sdft.prep.doctor.run import DoctorOptions, doctor

    datasets, cfg, name = doctor_datasets(args)
    roots = [c.folder for d in datasets for c in d.report.concepts]
    out = Path(args.out) if args.out else Path("outputs") / "data_doctor" / (name or "dataset")
    for root in roots:
        if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
            raise ConfigError(f"--out {out} is inside the dataset {root}: the doctor never writes into a dataset.")
    result = doctor(datasets, DoctorOptions(pixels=args.pixels, faces=args.faces, tokenizer=args.tokenizer))
    if args.loss_probe:
        from sdft.prep.doctor.loss_probe import probe

        result.findings += probe(cfg, datasets, args.loss_probe, out / "loss_probe", args.data_overrides)
        from sdft.prep.doctor.findings import worst_first

        result.findings = worst_first(result.findings)
    print("\n".join(text_lines(result, args.limit)))
    print(f"Report: {write_json(result, out / 'report.json')}, {write_html(result, out / 'report.html')}")
    if args.move_to:
        from sdft.prep.doctor.move import move, to_move

        moved = move(to_move(result.findings), roots, Path(args.move_to))
        for src, dest in moved:
            print(f"moved {src} -> {dest}")
    if args.strict and result.severe:
        print(f"{len(result.severe)} severe finding(s) (--strict).", file=sys.stderr)
        return 1
    return 0
