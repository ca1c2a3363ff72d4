"""SD 1.x: one CLIP ViT-L text tower (clip skip as set), nothing added to the U-Net's conditioning, 512 px."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline

from sdft.config import ModelFamily
from sdft.families.base import Conditioning, Family, Part, Text


KOHYA_UNET_PREFIX = "lora_unet_"
KOHYA_TE_PREFIX = "lora_te_"


def kohya_name(module: str, text_encoder: bool) -> str:
    """kohya's name of one diffusers module (SD 1.x and SD 2.x files: `lora_unet_down_blocks_0_...`,
    `lora_te_text_model_encoder_layers_0_...`), without the .lora_down / .alpha suffix."""
    if text_encoder:  # transformers 5 has no `text_model.` level; kohya/A1111 names always do
        return KOHYA_TE_PREFIX + ("text_model." + module.removeprefix("text_model.")).replace(".", "_")
    return KOHYA_UNET_PREFIX + module.replace(".", "_")


class Sd1Conditioning(Conditioning):
    """SD 1.x (and SD 2.x): text-encoder hidden states (or cached ones), nothing added."""

    family = ModelFamily.sd1
    keys = ("encoder_hidden_states",)

    def encode(self, module, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"encoder_hidden_states": module.encode_text(input_ids)}

    def unet_inputs(
        self, module, text: Text, latents: torch.Tensor, time_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict | None]:
        return self.encoded(module, text)["encoder_hidden_states"], None


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


class Sd1Family(Family):
    name = ModelFamily.sd1
    label = "SD 1.x"
    hub_id = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    tiny_model = "tiny"
    native_resolution = 512
    vae_example = "stabilityai/sd-vae-ft-mse"
    config_example = "any SD 1.5 diffusers folder for SD 1.5 fine-tunes such as Realistic Vision"
    layout = "model.diffusion_model.*, first_stage_model.*, cond_stage_model.*"
    preset = "sd15"
    kohya_version = "sd_v1"
    kohya_prefixes = "lora_unet_ / lora_te_"

    def matches_unet(self, unet_config) -> bool:
        return True  # the fallback: checked after SDXL and SD 2.x

    def matches_keys(self, keys: list[str]) -> bool:
        return True

    def build_tiny(self):
        from sdft.models.tiny import build_tiny_pipeline

        return build_tiny_pipeline()

    def ensure_tiny(self, cache_dir):
        from sdft.models.tiny import ensure_tiny_model

        return ensure_tiny_model(cache_dir)

    def pipeline_class(self) -> type:
        return StableDiffusionPipeline

    def load_kwargs(self) -> dict:
        return dict(safety_checker=None, requires_safety_checker=False)

    def conditioning(self) -> Conditioning:
        return Sd1Conditioning()

    def module_pipeline(self, module, tokenizer, tokenizer_2, scheduler):
        return assemble_pipeline(module.unet, module.vae, module.text_encoder, tokenizer, scheduler)

    def img2img(self, pipe):
        from diffusers import StableDiffusionImg2ImgPipeline

        img2img = StableDiffusionImg2ImgPipeline(**{**pipe.components, "requires_safety_checker": False})
        img2img.set_progress_bar_config(disable=True)
        return img2img

    def kohya_names(self, part: str, modules, unet_config=None) -> dict[str, str]:
        return {m: kohya_name(m, part != "unet") for m in modules}

    def kohya_read_names(self, part: str, modules, unet_config=None) -> dict[str, str]:
        return {name: m for m, name in self.kohya_names(part, modules, unet_config).items()}

    def original_text_parts(self, pipe) -> list[Part]:
        from sdft.models.original_layout import TEXT_ENCODER_PREFIX, text_encoder_to_original

        return [(TEXT_ENCODER_PREFIX, text_encoder_to_original, pipe.text_encoder)]

    def arch_models(self, device):
        from sdft.models.sd15_arch import build_sd15_text_encoder, build_sd15_unet, build_sd15_vae

        return dict(
            unet=build_sd15_unet(device=device),
            vae=build_sd15_vae(device=device),
            text_encoder=build_sd15_text_encoder(device=device),
        )
