"""The model family (SD 1.x or SDXL) of a loaded pipeline or of a single-file checkpoint, and the checks that
depend on it."""

from __future__ import annotations

from pathlib import Path

from diffusers import DiffusionPipeline, StableDiffusionXLPipeline

from sdft.config import ModelConfig, ModelFamily
from sdft.errors import ModelLoadError


def pipeline_family(pipe: DiffusionPipeline) -> ModelFamily:
    """SDXL for a pipeline with SDXL's two text towers and text_time embeddings, else SD 1.x."""
    if (
        isinstance(pipe, StableDiffusionXLPipeline)
        or getattr(pipe.unet.config, "addition_embed_type", None) == "text_time"
    ):
        return ModelFamily.sdxl
    return ModelFamily.sd1


# Original-layout key prefixes: SDXL base checkpoints (RealVisXL, Pony, ...) hold OpenCLIP bigG as the second
# embedder; the SDXL refiner holds only OpenCLIP, as embedder 0.
SDXL_MARK = "conditioner.embedders.1."
SDXL_REFINER_MARK = "conditioner.embedders.0.model."


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


def checkpoint_family(
    path: Path, wanted: ModelFamily | str | None = None, keys: list[str] | None = None
) -> ModelFamily:
    """SDXL when the file holds SDXL's second text tower (`conditioner.embedders.1.*`), else SD 1.x; a different
    explicit ``model.family`` (``wanted``) is an error, before anything is loaded. `keys`: checkpoint_keys(path)."""
    keys = checkpoint_keys(path) if keys is None else keys
    if not any(k.startswith(SDXL_MARK) for k in keys) and any(k.startswith(SDXL_REFINER_MARK) for k in keys):
        raise ModelLoadError(
            f"model.path={path} is an SDXL refiner checkpoint (one OpenCLIP tower, conditioner.embedders.0.model.*); "
            "sdft trains SD 1.x and SDXL base models. Use an SDXL base checkpoint (e.g. RealVisXL, Pony)."
        )
    family = ModelFamily.sdxl if any(k.startswith(SDXL_MARK) for k in keys) else ModelFamily.sd1
    if wanted is not None and ModelFamily(wanted) != family:
        what = (
            "an SDXL checkpoint (it has conditioner.embedders.1.*, SDXL's second text tower)"
            if family == ModelFamily.sdxl
            else "an SD 1.x checkpoint (no conditioner.embedders.1.*: SDXL's second text tower is missing)"
        )
        raise ModelLoadError(
            f"model.family={ModelFamily(wanted).value} but model.path={path} is {what}; set "
            f"model.family={family.value} or leave it unset (it is detected from the file's keys)."
        )
    return family


def check_family(cfg: ModelConfig, pipe: DiffusionPipeline) -> ModelFamily:
    """The loaded pipeline's family; a different explicit ``model.family`` is an error."""
    family = pipeline_family(pipe)
    wanted = getattr(cfg, "family", None)  # absent from configs saved before model.family existed
    if wanted is not None and ModelFamily(wanted) != family:
        raise ModelLoadError(
            f"model.family={ModelFamily(wanted).value} but model.path={cfg.path} is a model of family {family.value}; "
            f"set model.family={family.value} or leave it unset (it is detected from the model)."
        )
    return family
