"""Nothing half-written: every file sdft writes goes to a temp name beside it and is renamed over the target.

`with atomic_path(path) as tmp: writer(tmp)` gives a temp path in the target's folder (so `os.replace` is atomic);
when the block ends without error the temp file becomes `path`, on error it is removed. The temp names start with
`.tmp-` (hidden, never listed as images; the disk-full cleanup in callbacks/disk_space.py removes them).
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike, *, shared: bool = False, owner: bool = True) -> Iterator[Path]:
    """A temp path that replaces `path` when the block succeeds. `shared=True`: a fixed temp name
    (`.tmp-<name>`), the same in every process of a distributed run, where only the `owner` process (rank 0)
    renames it and cleans up; others just pass it to a writer that writes on rank 0 only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name, not mkstemp: the writer creates the file, so it gets the usual permissions (mkstemp's are 0600)
    unique = "" if shared else f"-{os.getpid()}-{secrets.token_hex(4)}"
    tmp = path.with_name(f".tmp-{path.name}{unique}")
    try:
        yield tmp
        if owner:
            os.replace(tmp, path)
    finally:
        if owner and tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """`path.write_text(text)` (UTF-8), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
