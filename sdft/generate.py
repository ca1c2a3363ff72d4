"""`sdft.generate`: the public names of sdft/generation/ in one place (code: sdft/generation/, command line:
sdft/cli/generate.py). `python -m sdft.generate ...` runs `sdft generate ...`."""

from __future__ import annotations

import sys

from sdft.cli.generate import add_arguments, add_model_arguments, main, run_from_args
from sdft.generation.generator import Generator, LoadedLora
from sdft.generation.infotext import (
    create_infotext,
    lora_display_name,
    lora_short_hash,
    model_display_name,
    quote,
    save_png,
)
from sdft.generation.params import (
    DEFAULT_SCHEDULER,
    SCHEDULERS,
    GeneratedImage,
    GenerationParams,
    LoraSpec,
    make_scheduler,
    parse_floats,
    resolve_lora_file,
)
from sdft.generation.run import RunResult, run_generation

__all__ = [
    "DEFAULT_SCHEDULER",
    "SCHEDULERS",
    "GeneratedImage",
    "GenerationParams",
    "Generator",
    "LoadedLora",
    "LoraSpec",
    "RunResult",
    "add_arguments",
    "add_model_arguments",
    "create_infotext",
    "lora_display_name",
    "lora_short_hash",
    "main",
    "make_scheduler",
    "model_display_name",
    "parse_floats",
    "quote",
    "resolve_lora_file",
    "run_from_args",
    "run_generation",
    "save_png",
]

if __name__ == "__main__":
    sys.exit(main())
