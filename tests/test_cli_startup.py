"""`sdft --help` (and every command's option parsing) imports no torch or diffusers: the command table builds every
subcommand's parser, and sdft/cli/__init__.py's rule is that heavy libraries are imported inside the commands."""

from __future__ import annotations

import subprocess
import sys

from helpers.config import ROOT

PROBE = """
import sys
from sdft.cli import build_parser
build_parser()
print(sorted(m for m in ("torch", "diffusers", "transformers", "peft", "lightning") if m in sys.modules))
"""


def test_building_the_command_line_imports_no_heavy_library():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
