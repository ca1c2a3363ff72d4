"""A StableDiffusionPipeline around the models being trained (for sampling and for saving)."""

from __future__ import annotations

from diffusers import StableDiffusionPipeline


def assemble_pipeline(unet, vae, text_encoder, tokenizer, scheduler) -> StableDiffusionPipeline:
    """The current weights as a pipeline; shares modules, copies nothing."""
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
