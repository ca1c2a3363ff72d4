"""SD 2.x, the third family (sdft/families/sd2.py): the tiny SD 2-shaped model trains a LoRA with v-prediction, its
kohya file carries SD 2's fields and reads back, a single-file export loads back through diffusers'
`from_single_file`, the presets compose, and `sdft plan model=sd21` works offline from the shipped configs."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from sdft.adapters.sdxl_files import uses_sdxl_files
from sdft.config import ModelConfig, ModelFamily, PredictionType
from sdft.families import family_of
from sdft.families.load import load_pipeline
from sdft.families.sd2_arch import ensure_sd2_tiny_model
from sdft.families.single_file import save_single_file
from sdft.models.loading import make_noise_scheduler

KOHYA = "lora.safetensors"


@pytest.fixture(scope="module")
def sd2_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("sd2-cache")
    ensure_sd2_tiny_model(cache)
    return cache


def test_the_tiny_sd2_model_loads_as_sd2_with_v_prediction(sd2_cache):
    pipe = load_pipeline(ModelConfig(path="sd2_tiny", cache_dir=str(sd2_cache)))
    assert family_of(pipe).name == ModelFamily.sd2
    assert pipe.unet.config.use_linear_projection and list(pipe.unet.config.attention_head_dim) == [2, 2, 4, 4]
    assert pipe.text_encoder.config.hidden_act == "gelu"
    assert make_noise_scheduler(pipe).config.prediction_type == "v_prediction"  # what training's targets use
    eps = load_pipeline(ModelConfig(path="sd2_tiny", cache_dir=str(sd2_cache), prediction_type=PredictionType.epsilon))
    assert make_noise_scheduler(eps).config.prediction_type == "epsilon"  # the base variant's


def test_lora_training_on_sd2_writes_an_sd2_kohya_file_that_reads_back(fast_config, sd2_cache, tmp_path):
    from sdft.adapters.kohya import check_lora_fits
    from sdft.run.train import run

    cfg = fast_config(
        "model=sd2_tiny",
        f"model.cache_dir={sd2_cache}",
        "trainer.max_steps=2",
        "optim.lr=1e-3",
        "prior=none",
        "callbacks.validation_seeds=[]",
    )
    assert cfg.model.path == "sd2_tiny"
    summary = run(cfg)
    assert summary["steps"] == 2
    files = list((tmp_path / "out").rglob("*.safetensors"))
    kohya = next(f for f in files if f.parent.name == "lora" and f.name != "pytorch_lora_weights.safetensors")
    with safe_open(str(kohya), "pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    assert meta["ss_v2"] == "True" and meta["ss_base_model_version"] == "sd_v2_v"
    assert meta["ss_v_parameterization"] == "True"
    assert {k.split("_")[1] for k in state} <= {"unet", "te"} and any(k.startswith("lora_unet_") for k in state)
    pipe = load_pipeline(ModelConfig(path="sd2_tiny", cache_dir=str(sd2_cache)))
    unet_sd, _, _ = check_lora_fits(state, pipe.unet, pipe.text_encoder, meta, source=str(kohya))
    assert unet_sd and any(v.abs().sum() > 0 for k, v in unet_sd.items() if "lora_B" in k)  # trained, read back


def test_single_file_export_loads_back_as_sd2(sd2_cache, tmp_path):
    folder = ensure_sd2_tiny_model(sd2_cache)
    pipe = load_pipeline(ModelConfig(path=str(folder)))
    path = save_single_file(pipe, tmp_path / "sd2.safetensors", dtype=None)
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
    assert "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight" in keys  # open_clip layout, fused
    assert "model.diffusion_model.input_blocks.1.1.proj_in.weight" in keys
    assert family_of(keys).name == ModelFamily.sd2
    back = load_pipeline(ModelConfig(path=str(path), config=str(folder)))
    assert family_of(back).name == ModelFamily.sd2
    for name in ("unet", "text_encoder", "vae"):
        want, got = getattr(pipe, name).state_dict(), getattr(back, name).state_dict()
        for key, value in want.items():
            if not key.endswith("position_ids"):
                torch.testing.assert_close(got[key], value, msg=f"{name}.{key}")


def test_an_sd2_file_with_another_family_set_is_refused(sd2_cache, tmp_path):
    from sdft.errors import ModelLoadError

    folder = ensure_sd2_tiny_model(sd2_cache)
    path = save_single_file(load_pipeline(ModelConfig(path=str(folder))), tmp_path / "sd2.safetensors")
    with pytest.raises(ModelLoadError, match=r"model\.family=sd1 but .* is an SD 2\.x checkpoint"):
        load_pipeline(ModelConfig(path=str(path), config=str(folder), family="sd1"))


@pytest.mark.parametrize(
    "preset, path",
    [("sd21", "stabilityai/stable-diffusion-2-1"), ("sd21_base", "stabilityai/stable-diffusion-2-1-base")],
)
def test_presets_compose(preset, path):
    from helpers.config import compose_config

    cfg = compose_config([f"model={preset}"])
    assert cfg.model.path == path and cfg.model.family == "sd2"


def test_plan_for_sd21_works_offline_from_the_shipped_configs(monkeypatch):
    from sdft.run.plan.arch import architecture, build_models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    arch = architecture(ModelConfig(path="stabilityai/stable-diffusion-2-1", family="sd2"))
    assert arch.kind == "sd21" and arch.family == ModelFamily.sd2
    models = build_models(arch)
    assert models.unet.config.cross_attention_dim == 1024 and models.unet.config.sample_size == 96
    assert models.text_encoder.config.num_hidden_layers == 23 and models.text_encoder_2 is None
    assert architecture(ModelConfig(path="stabilityai/stable-diffusion-2-1")).kind == "sd21"  # a known id


def test_generator_renders_an_sd2_kohya_lora(sd2_cache, tmp_path):
    """`sdft generate` on an SD 2 base takes an SD 2 kohya file (SD 1 naming, SD 2 fields) and it changes the image."""
    import numpy as np

    from helpers.loras import make_lora
    from sdft.adapters.kohya import kohya_metadata, save_kohya_lora
    from sdft.families import get_family
    from sdft.generation.generator import Generator
    from sdft.generation.params import GenerationParams, LoraSpec

    cfg = ModelConfig(path="sd2_tiny", cache_dir=str(sd2_cache))
    pipe = load_pipeline(cfg)
    make_lora(pipe, tmp_path / "peft" / "pytorch_lora_weights.safetensors")
    meta = kohya_metadata(base_model="sd2_tiny", base=get_family("sd2").kohya_metadata(pipe.scheduler.config))
    kohya = save_kohya_lora(pipe.unet, None, tmp_path / "sd2_lora.safetensors", meta)
    generator = Generator(cfg, device="cpu")
    assert generator.family.name == ModelFamily.sd2 and not uses_sdxl_files(generator.pipe)  # SD 1 layout files
    params = dict(prompt="a photo", steps=2, width=64, height=64, seed=0, scheduler="euler")
    base = np.asarray(generator.generate(GenerationParams(**params))[0].image, dtype=float)
    with_lora = generator.generate(GenerationParams(**params, loras=[LoraSpec(str(kohya))]))[0].image
    assert np.abs(np.asarray(with_lora, dtype=float) - base).max() > 0
