"""The tensor names of a single-file checkpoint, read without its weights (what tells its family apart)."""

from __future__ import annotations

from pathlib import Path

from sdft.errors import ModelLoadError


def checkpoint_keys(path: Path) -> list[str]:
    """The tensor names of a single-file checkpoint: read from the .safetensors header, without the weights; a
    pickle (already allowed by the caller) is memory-mapped where its format permits."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return list(f.keys())
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (SafetensorError, UnpicklingError, EOFError, ...: all mean damaged)
        raise ModelLoadError(
            f"model.path={path}: not a readable checkpoint (truncated, a damaged header or another format: "
            f"{str(err)[:160]}). Download it again (compare its size or sha256 with the source's)."
        ) from None
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    return list(state)
