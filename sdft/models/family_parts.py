"""What training needs to know about a model family, in one place: checks, tokenizer, conditioning, pipelines.

sdft/run/train.py asks `family_parts(pipe, cfg)` once per phase; SD 1.x gets what it always had, SDXL gets the second
text tower, a tokenizer giving both towers' ids, per-sample time ids and the SDXL pipeline for sampling and saving.
"""

from __future__ import annotations

from sdft.models.params import count_params

from dataclasses import dataclass

from diffusers import StableDiffusionXLPipeline

from sdft.config import ModelFamily
from sdft.errors import UnsupportedModelError
from sdft.models.conditioning import PairTokenizer, Sd1Conditioning, SdxlConditioning
from sdft.models.family import pipeline_family


@dataclass
class FamilyParts:
    family: ModelFamily
    tokenizer: object  # what the dataset tokenizes captions with; None: SD 1.x's own (with any trained token)
    conditioning: Sd1Conditioning | SdxlConditioning
    text_encoder_2: object = None
    tokenizer_2: object = None

    @property
    def time_ids(self) -> bool:
        return self.family == ModelFamily.sdxl

    def param_counts(self) -> dict:
        """{"text_encoder_2": {"trainable", "total"}} for SDXL (the run summary's parameter counts), else {}."""
        if self.text_encoder_2 is None:
            return {}
        trainable, total = count_params(self.text_encoder_2)
        return {"text_encoder_2": {"trainable": trainable, "total": total}}

    @property
    def trains_text_encoder_2(self) -> bool:
        return self.text_encoder_2 is not None and any(p.requires_grad for p in self.text_encoder_2.parameters())


def check_sdxl_config(cfg) -> None:
    """Options not wired for SDXL yet: one clear error each, before any training (docs/sdxl.md)."""
    refused = {
        f"model.clip_skip={cfg.model.clip_skip} (SDXL always uses the penultimate layer)": cfg.model.clip_skip != 1,
    }
    bad = [name for name, on in refused.items() if on]
    if bad:
        raise UnsupportedModelError(
            f"Not supported with an SDXL base yet: {'; '.join(bad)}. Turn it off "
            "(docs/sdxl.md lists what SDXL training supports)."
        )


def family_parts(pipe, cfg) -> FamilyParts:
    """The family's training parts for a loaded pipeline (SDXL: options it does not support yet are refused)."""
    family = pipeline_family(pipe)
    if family != ModelFamily.sdxl:
        return FamilyParts(family, None, Sd1Conditioning())
    check_sdxl_config(cfg)
    return FamilyParts(
        family,
        PairTokenizer(pipe.tokenizer, pipe.tokenizer_2),
        SdxlConditioning(),
        pipe.text_encoder_2,
        pipe.tokenizer_2,
    )


def assemble_sdxl_pipeline(
    unet, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler
) -> StableDiffusionXLPipeline:
    """The current SDXL weights as a pipeline (shares modules, copies nothing), for sampling and saving."""
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def module_pipeline(module, tokenizer, tokenizer_2, scheduler):
    """The module's current weights as the pipeline of its family (SD 1.x or SDXL)."""
    if getattr(module, "text_encoder_2", None) is None:
        from sdft.models.assemble import assemble_pipeline

        return assemble_pipeline(module.unet, module.vae, module.text_encoder, tokenizer, scheduler)
    return assemble_sdxl_pipeline(
        module.unet, module.vae, module.text_encoder, module.text_encoder_2, tokenizer, tokenizer_2, scheduler
    )
