"""A benchmark's result: printed as one JSON line, and appended to a JSON-lines file when one is given."""

from __future__ import annotations

import json


def emit(result: dict, path: str | None) -> None:
    print(json.dumps(result))
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(result) + "\n")
