"""A full disk while a checkpoint is written: one clear error with the space needed, no partial files left behind.

The writers already write to temp names and rename (so earlier checkpoints stay resumable); this removes what a
failed write left (the new step folder, `.tmp` files) and says how much room the next write needs.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from sdft.errors import SdftError


class DiskFullError(SdftError, OSError):
    """No space left on the device while writing a checkpoint or the final LoRA."""


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def remove_partial(folder: Path, whole: bool) -> None:
    """The failed write's leftovers: the whole (new) folder, or only its temp files."""
    if whole:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for tmp in folder.rglob(".*tmp*") if folder.is_dir() else []:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def disk_full(err: OSError, folder: Path, needed: int, whole: bool) -> SdftError | OSError:
    """A DiskFullError for ENOSPC (after removing the partial write), else the error itself."""
    if err.errno not in (errno.ENOSPC, errno.EDQUOT):
        return err
    remove_partial(folder, whole)
    free = shutil.disk_usage(folder if folder.exists() else folder.parent.parent).free
    return DiskFullError(
        f"No space left on the device writing {folder} ({err.strerror}): it needs about "
        f"{needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free. The partial write was removed; "
        "earlier checkpoints are intact. Free some space (or lower callbacks.keep_last_k), then run "
        "the same command with resume=auto."
    )
