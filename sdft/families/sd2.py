"""SD 2.x: SD 1.x's pipeline and conditioning with the OpenCLIP-H text tower (as diffusers converts it) and a
linear-projection U-Net; 768-v predicts v at 768 px, base epsilon at 512 px (the scheduler config says which, and
training reads it from there: `model.prediction_type`). Architecture and tiny model: sdft/families/sd2_arch.py."""

from __future__ import annotations

from typing import Any

from sdft.config import ModelFamily
from sdft.families.base import Part
from sdft.families.sd1 import Sd1Family

# SD 2.x single files hold the OpenCLIP text tower under cond_stage_model.model.* (SD 1.x: cond_stage_model.transformer.*)
SD2_MARK = "cond_stage_model.model."
SD2_TEXT_ENCODER_PREFIX = SD2_MARK  # + transformer.resblocks.N.*, token_embedding, positional_embedding, ln_final


class Sd2Family(Sd1Family):
    name = ModelFamily.sd2
    label = "SD 2.x"
    hub_id = "stabilityai/stable-diffusion-2-1"
    tiny_model = "sd2_tiny"
    native_resolution = 768  # 768-v; the 512-base variant's is 512 (a loaded model's: data/buckets.py)
    vae_example = "stabilityai/sd-vae-ft-mse"
    config_example = "stabilityai/stable-diffusion-2-1 (768-v) or stabilityai/stable-diffusion-2-1-base (512)"
    layout = "model.diffusion_model.*, first_stage_model.*, cond_stage_model.model.*"
    preset = "sd21"
    kohya_version = "sd_v2"

    def native_size_of(self, path: str) -> int:
        return 512 if "base" in path.lower() else self.native_resolution  # stable-diffusion-2-1-base: 512

    def matches_unet(self, unet_config) -> bool:
        return bool(getattr(unet_config, "use_linear_projection", False)) and not getattr(
            unet_config, "addition_embed_type", None
        )

    def matches_keys(self, keys: list[str]) -> bool:
        return any(k.startswith(SD2_MARK) for k in keys)

    def build_tiny(self):
        from sdft.families.sd2_arch import build_sd2_tiny_pipeline

        return build_sd2_tiny_pipeline()

    def ensure_tiny(self, cache_dir):
        from sdft.families.sd2_arch import ensure_sd2_tiny_model

        return ensure_sd2_tiny_model(cache_dir)

    def original_text_parts(self, pipe) -> list[Part]:
        from sdft.models.original_layout import open_clip_to_original

        return [(SD2_TEXT_ENCODER_PREFIX, open_clip_to_original, pipe.text_encoder)]

    def kohya_metadata(self, scheduler_config: Any = None) -> dict[str, str]:
        """As kohya's sd-scripts write SD 2 files: ss_v2, ss_base_model_version sd_v2 (sd_v2_v for v-prediction,
        `model_util.get_model_version_str_for_sd1_sd2`) and ss_v_parameterization."""
        v = getattr(scheduler_config, "prediction_type", None) == "v_prediction" or (
            isinstance(scheduler_config, dict) and scheduler_config.get("prediction_type") == "v_prediction"
        )
        version = self.kohya_version + ("_v" if v else "")
        return {"ss_base_model_version": version, "ss_v2": "True", "ss_v_parameterization": str(v)}

    def arch_models(self, device):
        from sdft.families.sd2_arch import build_sd21_text_encoder, build_sd21_unet, build_sd21_vae

        return dict(
            unet=build_sd21_unet(device=device),
            vae=build_sd21_vae(device=device),
            text_encoder=build_sd21_text_encoder(device=device),
        )
