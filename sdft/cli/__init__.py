"""`sdft <command>`: one console script, argparse subcommands.

One module per command in this package (sdft/cli/<command>.py); the work itself lives in the library modules they
call. To add a command, write `register(subparsers)` in its module (add a parser, `set_defaults(func=fn)` where
`fn(args) -> int` is the exit code; import heavy libraries inside `fn`, so `sdft --help` stays fast) and list the
module below. Errors meant for people (sdft.errors.SdftError) print as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# group (None: top level) -> (help, modules with register(subparsers))
COMMANDS: dict[str | None, tuple[str, list[str]]] = {
    None: (
        "",
        ["sdft.cli.generate", "sdft.cli.export", "sdft.cli.ui", "sdft.cli.eval", "sdft.cli.plan", "sdft.cli.sweep"],
    ),
    "lora": ("LoRA file tools: resize, extract", ["sdft.cli.lora"]),
    "data": ("Dataset tools: check, doctor, prepare, caption", ["sdft.cli.data"]),
    "hub": ("Hugging Face Hub: push a run's files and model card", ["sdft.cli.hub"]),
    "run": ("A running training run: sample now, save now, stop", ["sdft.cli.run"]),
    "toy": ("The toy world: dataset, toy base pretraining, the quickstart's seed study, masks", ["sdft.cli.toy"]),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdft", description="Personalise Stable Diffusion 1.x: tools.")
    parser.add_argument("--verbose", "-v", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group, (help_text, modules) in COMMANDS.items():
        target = sub
        if group is not None:
            group_parser = sub.add_parser(group, help=help_text, description=help_text)
            target = group_parser.add_subparsers(dest=f"{group}_command", required=True, metavar="COMMAND")
        for name in modules:
            importlib.import_module(name).register(target)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from sdft.errors import SdftError

    try:
        return int(args.func(args) or 0)
    except SdftError as err:
        print(f"sdft {args.command}: error: {err}", file=sys.stderr)
        return 2
