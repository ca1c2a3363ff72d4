"""Nothing half-written: every file sdft writes goes to a temp name beside it and is renamed over the target.

`with atomic_path(path) as tmp: writer(tmp)` gives `tmp` = `<folder>/.sdft-tmp-<pid>-<hex>-<name>/<name>`: a private
temp folder beside the target (so `os.replace` is atomic) holding the file under its own name (writers that go by
the suffix, as PIL does, see the real one). Whatever the writer makes there on its own (safetensors 0.8 writes a
`.tmpXXXXXX` file and renames it) stays inside that folder. When the block ends without error the file becomes
`path` with the permissions the umask gives a new file (safetensors creates 0600 files: another user's A1111 or
ComfyUI could not read the LoRA), and the temp folder is removed, also on error.

All sdft temp names start with `.sdft-tmp-` (`TEMP_PREFIX`: hidden, never listed as images; the disk-full cleanup
in callbacks/disk_space.py removes them); `remove_stale_temps` removes those a killed process left (resume.py).
`atomic_dir` does the same for a whole folder (a diffusers pipeline).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TEMP_PREFIX = ".sdft-tmp-"
_UNIQUE = re.compile(re.escape(TEMP_PREFIX) + r"(?P<pid>\d+)-[0-9a-f]+-")


def temp_name(name: str, shared: bool = False) -> str:
    """sdft's temp name for `name`: `.sdft-tmp-<pid>-<random hex>-<name>`, or `.sdft-tmp-shared-<name>` (the same
    in every process of a distributed run)."""
    unique = "shared" if shared else f"{os.getpid()}-{secrets.token_hex(4)}"
    return f"{TEMP_PREFIX}{unique}-{name}"


def umask() -> int:
    """The process's umask, read without changing it where Linux says it (os.umask alone sets it while reading,
    which a thread creating a file at that moment would see)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share(path: str | os.PathLike) -> None:
    """Give `path` (a file, or a folder and everything in it) the permissions a new file / folder gets from the
    umask: 0666 / 0777 minus the umask (0644 / 0755 with the usual 022)."""
    path, mask = Path(path), umask()
    if path.is_dir():
        for sub in [path, *path.rglob("*")]:
            if not sub.is_symlink():
                os.chmod(sub, (0o777 if sub.is_dir() else 0o666) & ~mask)
    elif path.exists():
        os.chmod(path, 0o666 & ~mask)


@contextmanager
def atomic_path(path: str | os.PathLike, *, shared: bool = False, owner: bool = True) -> Iterator[Path]:
    """A temp path that replaces `path` when the block succeeds. `shared=True`: a fixed temp name
    (`.sdft-tmp-shared-<name>/<name>`), the same in every process of a distributed run, where only the `owner` process
    (rank 0) renames it and cleans up; others just pass it to a writer that writes on rank 0 only."""
    path = Path(path)
    folder = path.with_name(temp_name(path.name, shared))
    if owner:
        folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / path.name
    try:
        yield tmp
        if owner:
            share(tmp)
            os.replace(tmp, path)
    finally:
        if owner:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def atomic_dir(directory: str | os.PathLike) -> Iterator[Path]:
    """A temp folder that replaces `directory` (and whatever was there) when the block succeeds, with the umask's
    permissions throughout; removed on error."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(temp_name(directory.name))
    tmp.mkdir()
    old = directory.with_name(temp_name(directory.name + ".old"))
    try:
        yield tmp
        share(tmp)
        if directory.exists():
            os.replace(directory, old)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes nothing before it has looked (and a container restarts with the same pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temp files / folders of sdft's naming under `folder` that no running process is writing (a
    kill -9 during a write leaves them); returns what was removed."""
    found = sorted(p for p in Path(folder).rglob(TEMP_PREFIX + "*") if p.is_dir() or p.is_file())
    removed = []
    for tmp in found:
        if any(parent in removed for parent in tmp.parents):
            continue
        match = _UNIQUE.match(tmp.name)
        if match and _alive(int(match["pid"])):
            continue
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def write_text(path: str | os.PathLike, text: str) -> Path:
    """`path.write_text(text)` (UTF-8), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
