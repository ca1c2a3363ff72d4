"""`sdft data check|prepare|caption`: the dataset tools' command lines (their work lives in sdft/data/)."""

from __future__ import annotations

from sdft.data import caption, check, prepare

# name -> (module with add_arguments(parser) and run_from_args(args), help)
TOOLS = {
    "check": (check, "report on a dataset and preview its crops, without training"),
    "prepare": (prepare, "face and half-body crops, upscaling, masks and a framing report"),
    "caption": (caption, "caption images with BLIP / GIT / Florence-2 or a WD14 tagger"),
}


def register(subparsers) -> None:
    """Add `check`, `prepare` and `caption` under `sdft data`."""
    for name, (module, help_text) in TOOLS.items():
        parser = subparsers.add_parser(name, help=help_text, description=module.__doc__.splitlines()[0])
        module.add_arguments(parser)
        parser.set_defaults(func=module.run_from_args)
