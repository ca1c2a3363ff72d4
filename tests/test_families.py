"""The family interface (sdft/families/): every family answers every question; `family_of` from a pipeline, a
config and a single file's keys; the tiny models of each family are told apart."""

from __future__ import annotations

import pytest
import torch

from sdft.config import ModelConfig, ModelFamily
from sdft.families import FAMILIES, Family, family_of, get_family
from sdft.families.base import Conditioning
from sdft.families.sd2_arch import build_sd2_tiny_pipeline
from sdft.models.sdxl_tiny import build_sdxl_tiny_pipeline
from sdft.models.tiny import build_tiny_pipeline

BUILDERS = {ModelFamily.sd1: build_tiny_pipeline, ModelFamily.sd2: build_sd2_tiny_pipeline}
BUILDERS[ModelFamily.sdxl] = build_sdxl_tiny_pipeline


@pytest.fixture(scope="module")
def pipes():
    return {name: build() for name, build in BUILDERS.items()}


def test_there_is_one_family_per_name():
    assert {f.name for f in FAMILIES} == set(ModelFamily)
    for f in FAMILIES:
        assert get_family(f.name.value) is f


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name.value)
def test_every_family_answers_every_question(family: Family, pipes):
    """Each attribute set and each method of the interface answered (none left to the base's NotImplementedError)."""
    pipe = pipes[family.name]
    for attr in ("label", "hub_id", "tiny_model", "vae_example", "config_example", "layout", "kohya_version", "preset"):
        assert isinstance(getattr(family, attr), str) and getattr(family, attr), attr
    assert family.native_resolution in (512, 768, 1024)
    assert family.matches_unet(pipe.unet.config)
    assert family.pipeline_class() is type(pipe)
    assert isinstance(family.load_kwargs(), dict)
    assert isinstance(family.conditioning(), Conditioning)
    assert family.conditioning().keys[0] == "encoder_hidden_states"
    parts = family.original_text_parts(pipe)
    assert [model for _, _, model in parts] == [getattr(pipe, p) for p in family.text_parts]
    for prefix, convert, model in parts:
        assert convert({k: v for k, v in model.state_dict().items()}), prefix
    meta = family.kohya_metadata(pipe.scheduler.config)
    assert meta["ss_base_model_version"].startswith(family.kohya_version)
    assert type(family.img2img(pipe)).__name__.endswith("Img2ImgPipeline")
    rebuilt = family.module_pipeline(pipe, pipe.tokenizer, getattr(pipe, "tokenizer_2", None), pipe.scheduler)
    assert rebuilt.unet is pipe.unet and type(rebuilt) is type(pipe)
    assert family_of(family.build_tiny()) is family
    models = family.arch_models("meta")
    assert set(models) == {"unet", "vae", *family.text_parts} and family.matches_unet(models["unet"].config)


def test_family_of_a_pipeline_and_a_module(pipes):
    assert {name: family_of(pipe).name for name, pipe in pipes.items()} == {n: n for n in pipes}
    assert family_of(pipes[ModelFamily.sd2]).name == ModelFamily.sd2  # SD 1 pipeline class, SD 2 U-Net


def test_family_of_a_config():
    assert family_of(ModelConfig(path="sd2_tiny")).name == ModelFamily.sd2
    assert family_of(ModelConfig(path="sdxl_tiny")).name == ModelFamily.sdxl
    assert family_of(ModelConfig(path="tiny")).name == ModelFamily.sd1
    assert family_of(ModelConfig(path="stabilityai/stable-diffusion-2-1", family="sd2")).name == ModelFamily.sd2
    assert family_of(ModelConfig(path="some/model")).name == ModelFamily.sd1  # unknown: as before, SD 1.x


def test_family_of_single_file_keys():
    sd1 = ["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", "model.diffusion_model.x"]
    sd2 = ["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", "model.diffusion_model.x"]
    sdxl = ["conditioner.embedders.0.transformer.text_model.x", "conditioner.embedders.1.model.ln_final.weight"]
    assert [family_of(keys).name for keys in (sd1, sd2, sdxl)] == [ModelFamily.sd1, ModelFamily.sd2, ModelFamily.sdxl]


def test_sd2_kohya_fields_follow_the_prediction_type():
    sd2 = get_family("sd2")
    assert sd2.kohya_metadata({"prediction_type": "v_prediction"}) == {
        "ss_base_model_version": "sd_v2_v",
        "ss_v2": "True",
        "ss_v_parameterization": "True",
    }
    assert sd2.kohya_metadata({"prediction_type": "epsilon"})["ss_base_model_version"] == "sd_v2"
    assert get_family("sd1").kohya_metadata(None) == {"ss_base_model_version": "sd_v1", "ss_v2": "False"}


def test_sd2_conditioning_is_the_last_layer_of_its_tower(pipes):
    """SD 2.x conditions on the converted tower's last hidden state (clip skip 1), as diffusers' pipeline does."""
    pipe = pipes[ModelFamily.sd2]
    ids = pipe.tokenizer(["a photo"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    want, _ = pipe.encode_prompt("a photo", "cpu", 1, False)

    class Module:
        text_encoder = pipe.text_encoder

        @staticmethod
        def encode_text(input_ids):
            return pipe.text_encoder(input_ids)[0]

    with torch.no_grad():
        got = get_family("sd2").conditioning().encode(Module, ids)["encoder_hidden_states"]
    torch.testing.assert_close(got, want)
