"""The safetensors hashes kohya and A1111 use: sha256 of the bytes after the header (the tensors, not the metadata).

kohya writes it as `sshs_model_hash` (with `sshs_legacy_hash`, see adapters/kohya.py); A1111 shows its first 12
hex digits as a LoRA's short hash (`Lora hashes:` in infotexts, sdft/generation/infotext.py).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import BinaryIO


def tensors_sha256(source: bytes | str | Path) -> str:
    """sha256 (hex) of a safetensors file's bytes after its header; `source` is the file or its bytes."""
    with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as f:
        return _after_header(f)


def _after_header(f: BinaryIO) -> str:
    header = int.from_bytes(f.read(8), "little")
    f.seek(8 + header)
    digest = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()
