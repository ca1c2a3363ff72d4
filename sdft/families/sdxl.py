"""SDXL: two text towers (CLIP ViT-L and OpenCLIP bigG with projection), the pooled embedding and the size/crop time
ids added to the U-Net's conditioning, 1024 px, its own pipeline classes and single-file layout.

SDXL batches carry both tokenizers' ids as `input_ids` (B, 2, 77) (`PairTokenizer`) and `time_ids` (B, 6).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers import StableDiffusionXLPipeline

from sdft.config import ModelFamily
from sdft.errors import LoraFormatError, ModelLoadError, UnsupportedModelError
from sdft.families.base import Conditioning, Family, FamilyParts, Part, Text
from sdft.models.original_layout import SingleFileError, unet_to_original
from sdft.families.sdxl_text import PairTokenizer, default_time_ids, sdxl_text_embeddings

# Original-layout key prefixes: SDXL base checkpoints (RealVisXL, Pony, ...) hold OpenCLIP bigG as the second
# embedder; the SDXL refiner holds only OpenCLIP, as embedder 0.
SDXL_MARK = "conditioner.embedders.1."
SDXL_REFINER_MARK = "conditioner.embedders.0.model."


KOHYA_PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}


def kohya_names(part: str, modules: Iterable[str], unet_config=None) -> dict[str, str]:
    """Our module names -> their kohya LoRA names (without the .lora_down/.alpha suffix), as kohya writes SDXL
    files: the U-Net's in the original layout (needs the U-Net's config for the block numbering)."""
    modules = list(modules)
    if part != "unet":
        return {
            m: KOHYA_PREFIXES[part] + ("text_model." + m.removeprefix("text_model.")).replace(".", "_") for m in modules
        }
    if unet_config is None:
        raise ValueError("kohya_names: the U-Net's config is needed for SDXL's original-layout names")
    try:
        originals = unet_to_original({f"{m}.weight": m for m in modules}, unet_config)
    except SingleFileError as err:
        raise LoraFormatError(f"U-Net layers without an original-layout (kohya SDXL) name: {err}") from None
    return {m: KOHYA_PREFIXES["unet"] + key.removesuffix(".weight").replace(".", "_") for key, m in originals.items()}


def kohya_name(part: str, module: str, unet_config=None) -> str:
    """One module's kohya name (`kohya_names`)."""
    return kohya_names(part, [module], unet_config)[module]


def diffusers_style_name(part: str, module: str) -> str:
    """The kohya name sdft wrote before (U-Net: `lora_unet_<diffusers module path>`), still read."""
    if part != "unet":
        return kohya_name(part, module)
    return KOHYA_PREFIXES["unet"] + module.replace(".", "_")


class SdxlConditioning(Conditioning):
    """SDXL: both text towers (module.text_encoder, module.text_encoder_2) and the size/crop time ids."""

    family = ModelFamily.sdxl
    keys = ("encoder_hidden_states", "text_embeds")

    def encode(self, module, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pair ids (B, 2, 77) -> both towers' penultimate states (B, 77, D1 + D2) and the pooled embedding."""
        with torch.set_grad_enabled(module.train_text_encoder and torch.is_grad_enabled()):
            embeds, pooled = sdxl_text_embeddings(
                module.text_encoder, module.text_encoder_2, input_ids[:, 0], input_ids[:, 1]
            )
        return {"encoder_hidden_states": embeds, "text_embeds": pooled}

    def placeholder_ids(self, n: int) -> torch.Tensor:
        return torch.zeros(n, 2, 77, dtype=torch.long)  # both tokenizers' ids (PairTokenizer)

    def placeholder_extras(self, n: int, height: int, width: int) -> dict[str, torch.Tensor]:
        return {"time_ids": torch.tensor([[height, width, 0, 0, height, width]] * n, dtype=torch.float32)}

    def unet_inputs(
        self, module, text: Text, latents: torch.Tensor, time_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict]:
        states = self.encoded(module, text)
        if time_ids is None:  # e.g. the base-prediction prior or the fixed-noise loss: no per-sample sizes there
            time_ids = default_time_ids(latents)
        added = {"text_embeds": states["text_embeds"], "time_ids": time_ids.to(latents.device)}
        return states["encoder_hidden_states"], added


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


class SdxlFamily(Family):
    name = ModelFamily.sdxl
    label = "SDXL"
    hub_id = "stabilityai/stable-diffusion-xl-base-1.0"
    tiny_model = "sdxl_tiny"
    native_resolution = 1024
    pipeline_encodes_prompts = True  # and expands a multi-vector embedding's token itself
    vae_example = "madebyollin/sdxl-vae-fp16-fix"
    config_example = "any SDXL base 1.0 diffusers folder for SDXL fine-tunes such as RealVisXL or Pony"
    layout = "model.diffusion_model.*, first_stage_model.*, conditioner.embedders.0/1.*"
    preset = "sdxl"
    kohya_version = "sdxl_base_v1-0"
    kohya_prefixes = "lora_unet_ / lora_te1_ / lora_te2_"
    text_parts = ("text_encoder", "text_encoder_2")

    def matches_unet(self, unet_config) -> bool:
        return getattr(unet_config, "addition_embed_type", None) == "text_time"

    def matches_keys(self, keys: list[str]) -> bool:
        if not any(k.startswith(SDXL_MARK) for k in keys) and any(k.startswith(SDXL_REFINER_MARK) for k in keys):
            raise ModelLoadError(
                "The checkpoint is an SDXL refiner (one OpenCLIP tower, conditioner.embedders.0.model.*); "
                "sdft trains SD 1.x, SD 2.x and SDXL base models. Use an SDXL base checkpoint (e.g. RealVisXL, Pony)."
            )
        return any(k.startswith(SDXL_MARK) for k in keys)

    def pipeline_class(self) -> type:
        return StableDiffusionXLPipeline

    def load_kwargs(self) -> dict:
        return dict(add_watermarker=False)

    def build_tiny(self):
        from sdft.models.sdxl_tiny import build_sdxl_tiny_pipeline

        return build_sdxl_tiny_pipeline()

    def ensure_tiny(self, cache_dir):
        from sdft.models.sdxl_tiny import ensure_sdxl_tiny_model

        return ensure_sdxl_tiny_model(cache_dir)

    def check_config(self, cfg) -> None:
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

    def conditioning(self) -> Conditioning:
        return SdxlConditioning()

    def parts(self, pipe, cfg) -> FamilyParts:
        self.check_config(cfg)
        tokenizer = PairTokenizer(pipe.tokenizer, pipe.tokenizer_2)
        return FamilyParts(self.name, tokenizer, SdxlConditioning(), pipe.text_encoder_2, pipe.tokenizer_2, True)

    def module_pipeline(self, module, tokenizer, tokenizer_2, scheduler):
        return assemble_sdxl_pipeline(
            module.unet, module.vae, module.text_encoder, module.text_encoder_2, tokenizer, tokenizer_2, scheduler
        )

    def img2img(self, pipe):
        from diffusers import StableDiffusionXLImg2ImgPipeline

        img2img = StableDiffusionXLImg2ImgPipeline(
            **{k: v for k, v in pipe.components.items() if k not in ("image_encoder", "feature_extractor")}
        )
        img2img.set_progress_bar_config(disable=True)
        return img2img

    def kohya_names(self, part: str, modules, unet_config=None) -> dict[str, str]:
        return kohya_names(part, modules, unet_config)

    def kohya_read_names(self, part: str, modules, unet_config=None) -> dict[str, str]:
        """kohya's original-layout names and the diffusers-style U-Net names sdft wrote before (still read)."""
        modules = list(modules)
        try:
            names = kohya_names(part, modules, unet_config)
        except LoraFormatError:  # a U-Net the original layout cannot name: only the diffusers-style names fit it
            names = {}
        return {**{diffusers_style_name(part, m): m for m in modules}, **{name: m for m, name in names.items()}}

    def original_text_parts(self, pipe) -> list[Part]:
        from sdft.models.original_layout import (
            SDXL_TEXT_ENCODER_2_PREFIX,
            SDXL_TEXT_ENCODER_PREFIX,
            open_clip_to_original,
            text_encoder_to_original,
        )

        return [
            (SDXL_TEXT_ENCODER_PREFIX, text_encoder_to_original, pipe.text_encoder),
            (SDXL_TEXT_ENCODER_2_PREFIX, open_clip_to_original, pipe.text_encoder_2),
        ]

    def arch_models(self, device):
        from sdft.models.sdxl_arch import build_sdxl_text_encoders, build_sdxl_unet, build_sdxl_vae

        te, te2 = build_sdxl_text_encoders(device=device)
        return dict(
            unet=build_sdxl_unet(device=device), vae=build_sdxl_vae(device=device), text_encoder=te, text_encoder_2=te2
        )
