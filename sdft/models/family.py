"""The model family of a loaded pipeline (SD 1.x or SDXL), and the checks that depend on it."""

from __future__ import annotations

from diffusers import DiffusionPipeline, StableDiffusionXLPipeline

from sdft.config import ModelConfig, ModelFamily
from sdft.errors import ModelLoadError, UnsupportedModelError


def pipeline_family(pipe: DiffusionPipeline) -> ModelFamily:
    """SDXL for a pipeline with SDXL's two text towers and text_time embeddings, else SD 1.x."""
    if (
        isinstance(pipe, StableDiffusionXLPipeline)
        or getattr(pipe.unet.config, "addition_embed_type", None) == "text_time"
    ):
        return ModelFamily.sdxl
    return ModelFamily.sd1


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


def refuse_sdxl(family: ModelFamily, feature: str) -> None:
    """``feature`` (export, generation) is SD 1.x only so far (issue 18; training is wired: docs/sdxl.md)."""
    if family == ModelFamily.sdxl:
        raise UnsupportedModelError(
            f"{feature} with an SDXL base is not supported yet: sdft trains SDXL LoRAs (model=sdxl_tiny, diffusers "
            "folders) but export and generation are SD 1.x only so far (docs/sdxl.md). Use an SD 1.x base "
            "(model=sd15, model=tiny)."
        )
