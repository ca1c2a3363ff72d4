"""Generation pipelines per model family: `img2img_pipeline(pipe)` gives the family's img2img pipeline over the same
components (for `sdft generate` / the UI, sdft/generation/generator.py)."""

from __future__ import annotations

from diffusers import (
    DiffusionPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionXLImg2ImgPipeline,
)

from sdft.config import ModelFamily
from sdft.models.family import pipeline_family


def img2img_pipeline(pipe: DiffusionPipeline) -> DiffusionPipeline:
    """The family's img2img pipeline over `pipe`'s components (no reload; LoRAs shared)."""
    if pipeline_family(pipe) == ModelFamily.sdxl:
        img2img = StableDiffusionXLImg2ImgPipeline(
            **{k: v for k, v in pipe.components.items() if k not in ("image_encoder", "feature_extractor")}
        )
    else:
        img2img = StableDiffusionImg2ImgPipeline(**{**pipe.components, "requires_safety_checker": False})
    img2img.set_progress_bar_config(disable=True)
    return img2img
