"""SDXL single-file checkpoints (original layout: RealVisXL, Pony, ...): loading through diffusers' converter with the
family detected from the keys, merged export back into that layout (tiny SDXL and the real architecture's key set),
VAE overrides with an SDXL base, and the realvisxl preset."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
    infer_diffusers_model_type,
)
from safetensors.torch import load_file, save_file

from helpers.compare import same_weights
from sdft.adapters.lora import setup_trainable
from sdft.adapters.sdxl_files import save_sdxl_kohya_lora, save_sdxl_lora
from sdft.cli import main as cli
from sdft.config import AdapterConfig, AdapterKind, ModelConfig, ModelFamily
from sdft.errors import ModelLoadError
from sdft.families.load import load_pipeline
from sdft.models.original_layout import (
    SDXL_TEXT_ENCODER_2_PREFIX,
    VAE_PREFIX,
    vae_to_original,
)
from sdft.families.single_file import pipeline_parts, pipeline_to_original, save_single_file
from sdft.models.sdxl_arch import build_sdxl_text_encoders, build_sdxl_unet, build_sdxl_vae
from sdft.models.sdxl_tiny import ensure_sdxl_tiny_model
from sdft.run.train import run

PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory) -> Path:
    return ensure_sdxl_tiny_model(tmp_path_factory.mktemp("sdxl_cache"))


@pytest.fixture(scope="module")
def sdxl_file(sdxl_dir, tmp_path_factory) -> Path:
    """The tiny SDXL written as one original-layout fp32 file by `sdft export`."""
    path = tmp_path_factory.mktemp("sdxl_single") / "tiny_sdxl.safetensors"
    assert cli(["export", "--base", str(sdxl_dir), "--single-file", str(path), "--dtype", "fp32"]) == 0
    return path


def folder_pipe(sdxl_dir: Path) -> StableDiffusionXLPipeline:
    return StableDiffusionXLPipeline.from_pretrained(sdxl_dir, local_files_only=True, add_watermarker=False)


def assert_same(a, b, parts=PARTS) -> None:
    for name in parts:
        assert same_weights(getattr(a, name), getattr(b, name)), name


def test_export_round_trips_through_diffusers_from_single_file(sdxl_dir, sdxl_file, tmp_path):
    keys = load_file(sdxl_file).keys()
    assert "model.diffusion_model.label_emb.0.0.weight" in keys  # add_embedding, as the original names it
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in keys
    base = folder_pipe(sdxl_dir)
    loaded = StableDiffusionXLPipeline.from_single_file(str(sdxl_file), config=str(sdxl_dir), local_files_only=True)
    assert_same(loaded, base)
    # model.path=<file> alone (no model.family): detected as SDXL from the keys, loaded with the SDXL pipeline
    pipe = load_pipeline(ModelConfig(path=str(sdxl_file), config=str(sdxl_dir)))
    assert isinstance(pipe, StableDiffusionXLPipeline) and pipe.vae.config.scaling_factor == 0.13025
    assert_same(pipe, base)
    ckpt = tmp_path / "tiny_sdxl.ckpt"  # the pickle layout ({"state_dict": ...}), only with allow_pickle
    torch.save({"state_dict": pipeline_to_original(base, torch.float32)}, ckpt)
    assert_same(load_pipeline(ModelConfig(path=str(ckpt), config=str(sdxl_dir), allow_pickle=True)), base)


def test_lora_merged_export_equals_the_fused_pipeline(sdxl_dir, tmp_path):
    pipe = folder_pipe(sdxl_dir)
    models = (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
    setup_trainable(pipe.unet, pipe.text_encoder, AdapterConfig(kind=AdapterKind.lora, rank=2), pipe.text_encoder_2)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for model in models:
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    first = save_sdxl_lora(*models, tmp_path / "a.safetensors")
    second = save_sdxl_kohya_lora(*models, tmp_path / "b.safetensors", {"ss_network_module": "networks.lora"})

    want = folder_pipe(sdxl_dir)  # diffusers' own merge of the same files with the same weights
    want.load_lora_weights(str(first), adapter_name="a")
    want.load_lora_weights(str(second), adapter_name="b")
    want.set_adapters(["a", "b"], adapter_weights=[0.7, -0.2])
    want.fuse_lora(components=["unet", "text_encoder", "text_encoder_2"], adapter_names=["a", "b"])
    want.unload_lora_weights()
    base = folder_pipe(sdxl_dir)
    for name in ("unet", "text_encoder", "text_encoder_2"):  # the LoRAs change every trained part
        assert not same_weights(getattr(want, name), getattr(base, name)), name

    single, folder = tmp_path / "merged.safetensors", tmp_path / "merged"
    args = ["export", "--base", str(sdxl_dir), "--lora", f"{first}:0.7", "--lora", f"{second}:-0.2"]
    assert cli([*args, "--single-file", str(single), "--diffusers", str(folder), "--dtype", "fp32"]) == 0
    from_file = StableDiffusionXLPipeline.from_single_file(str(single), config=str(sdxl_dir), local_files_only=True)
    for got in (from_file, folder_pipe(folder)):
        for name in PARTS:
            a, b = getattr(got, name).state_dict(), getattr(want, name).state_dict()
            assert a.keys() == b.keys(), name
            assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a), name


def test_real_sdxl_keys_are_exactly_what_diffusers_converter_reads():
    """The real SDXL base architecture (meta device, no weights): every key we write is consumed by diffusers'
    original -> diffusers conversion and gives back every weight of the model, with its shape; none is left over
    (each converted key comes from one written key, an OpenCLIP in_proj from three)."""
    te1, te2 = build_sdxl_text_encoders(device="meta")
    pipe = SimpleNamespace(unet=build_sdxl_unet(device="meta"), vae=build_sdxl_vae(device="meta"))
    pipe.text_encoder, pipe.text_encoder_2 = te1, te2
    original: dict[str, torch.Tensor] = {}
    for prefix, convert, model in pipeline_parts(pipe):
        written = convert(model.state_dict())
        assert not any(prefix + k in original for k in written)
        original.update({prefix + k: v for k, v in written.items()})
    assert infer_diffusers_model_type(original) == "xl_base"  # what diffusers (and A1111/ComfyUI) take it for
    for key, shape in {
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight": (1280, 2048),
        "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (640, 640, 3, 3),
        "first_stage_model.decoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "conditioner.embedders.0.transformer.text_model.encoder.layers.11.self_attn.q_proj.weight": (768, 768),
        "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
        "conditioner.embedders.1.model.transformer.resblocks.31.mlp.c_fc.weight": (5120, 1280),
        "conditioner.embedders.1.model.text_projection": (1280, 1280),
        "conditioner.embedders.1.model.positional_embedding": (77, 1280),
        "conditioner.embedders.1.model.ln_final.weight": (1280,),
    }.items():
        assert tuple(original[key].shape) == shape, key

    def expected(model):
        return {
            k.removeprefix("text_model."): v.shape for k, v in model.state_dict().items() if "position_ids" not in k
        }

    def restored(converted):
        return {k.removeprefix("text_model."): v.shape for k, v in converted.items()}

    te2_keys = [k for k in original if k.startswith(SDXL_TEXT_ENCODER_2_PREFIX)]
    fused = sum(k.endswith(("in_proj_weight", "in_proj_bias")) for k in te2_keys)
    conversions = {
        "unet": (pipe.unet, convert_ldm_unet_checkpoint(original, pipe.unet.config), "model.diffusion_model.", 0),
        "vae": (pipe.vae, convert_ldm_vae_checkpoint(original, pipe.vae.config), VAE_PREFIX, 0),
        "text_encoder": (te1, convert_ldm_clip_checkpoint(original), "conditioner.embedders.0.", 0),
        "text_encoder_2": (
            te2,
            convert_open_clip_checkpoint(te2, original, prefix=SDXL_TEXT_ENCODER_2_PREFIX),
            SDXL_TEXT_ENCODER_2_PREFIX,
            2 * fused,
        ),
    }
    used = 0
    for name, (model, converted, prefix, extra) in conversions.items():
        assert restored(converted) == expected(model), name
        written = sum(k.startswith(prefix) for k in original)
        assert len(converted) == written + extra, name
        used += written
    assert used == len(original)  # every written key belongs to one of the four parts


def test_training_on_an_sdxl_single_file_is_detected_as_sdxl(fast_config, sdxl_dir, sdxl_file, tmp_path):
    summary = run(fast_config(f"model.path={sdxl_file}", f"model.config={sdxl_dir}", "trainer.max_steps=2"))
    assert summary["steps"] == 2 and summary["model"] == str(sdxl_file)
    assert Path(summary["output"]).is_file()
    with pytest.raises(ModelLoadError, match=r"model\.family=sd1 but model\.path=.* is an SDXL checkpoint"):
        load_pipeline(ModelConfig(path=str(sdxl_file), config=str(sdxl_dir), family=ModelFamily.sd1))


def test_generator_loads_an_sdxl_single_file(sdxl_dir, sdxl_file):
    from sdft.generation.generator import Generator
    from sdft.generation.params import GenerationParams

    params = GenerationParams(prompt="photo of sks dog", steps=2, width=64, height=64, seed=0)
    got = Generator(ModelConfig(path=str(sdxl_file), config=str(sdxl_dir)), device="cpu").generate(params)
    want = Generator(ModelConfig(path=str(sdxl_dir)), device="cpu").generate(params)
    assert got[0].image.tobytes() == want[0].image.tobytes()


def test_family_mismatches_are_clear_errors(tiny_dir, tiny_pipe_factory, sdxl_dir, sdxl_file, tmp_path):
    sd1_file = save_single_file(tiny_pipe_factory(), tmp_path / "sd1.safetensors", dtype=torch.float32)
    with pytest.raises(ModelLoadError, match=r"model\.family=sdxl but .* is an SD 1\.x checkpoint .*model\.family=sd1"):
        load_pipeline(ModelConfig(path=str(sd1_file), config=str(sdxl_dir), family=ModelFamily.sdxl))
    with pytest.raises(ModelLoadError, match=r"model\.config=.* is an SD 1\.x pipeline .* family sdxl"):
        load_pipeline(ModelConfig(path=str(sdxl_file), config=str(tiny_dir)))
    with pytest.raises(ModelLoadError, match=r"is an SDXL pipeline .* family sd1"):
        load_pipeline(ModelConfig(path=str(sd1_file), config=str(sdxl_dir)))
    refiner = tmp_path / "refiner.safetensors"
    save_file({"conditioner.embedders.0.model.text_projection": torch.zeros(2, 2)}, refiner)
    with pytest.raises(ModelLoadError, match="SDXL refiner"):
        load_pipeline(ModelConfig(path=str(refiner), config=str(sdxl_dir)))


def test_offline_sdxl_file_without_config_names_the_sdxl_default(sdxl_file, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(ModelLoadError) as err:
        load_pipeline(ModelConfig(path=str(sdxl_file), local_files_only=True))
    assert "stabilityai/stable-diffusion-xl-base-1.0" in str(err.value) and "SDXL base 1.0" in str(err.value)


def test_damaged_or_vae_less_sdxl_single_file_is_one_clear_error(sdxl_dir, sdxl_file, tmp_path):
    """Issue 33 item 5: a truncated SDXL file is one ModelLoadError naming it; one without VAE weights (as many SDXL
    fine-tunes ship) asks for model.vae instead of two chained SingleFileComponentError tracebacks, and loads with
    it."""
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(sdxl_file.read_bytes()[:4096])
    with pytest.raises(ModelLoadError, match=r"truncated\.safetensors: not a readable checkpoint"):
        load_pipeline(ModelConfig(path=str(truncated), config=str(sdxl_dir)))
    no_vae = tmp_path / "no_vae.safetensors"
    save_file({k: v for k, v in load_file(sdxl_file).items() if not k.startswith(VAE_PREFIX)}, str(no_vae))
    with pytest.raises(ModelLoadError, match=r"no VAE weights .*model\.vae=madebyollin/sdxl-vae-fp16-fix"):
        load_pipeline(ModelConfig(path=str(no_vae), config=str(sdxl_dir)))
    pipe = load_pipeline(ModelConfig(path=str(no_vae), config=str(sdxl_dir), vae=str(sdxl_dir)))
    base = folder_pipe(sdxl_dir)
    assert_same(pipe, base, PARTS)
    assert pipe.vae.config.scaling_factor == 0.13025


def test_sdxl_vae_override_from_folder_and_single_file(sdxl_dir, sdxl_file, tmp_path):
    """An fp16-fix-style VAE (another SDXL VAE, force_upcast off) as a folder and as a single file, on an SDXL base
    (diffusers folder and single file); the latent scale stays SDXL's."""
    other = AutoencoderKL.from_pretrained(sdxl_dir, subfolder="vae")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    other.register_to_config(force_upcast=False)
    other.save_pretrained(tmp_path / "vae_fix")
    sd = vae_to_original(other.state_dict(), other.config)
    save_file(sd, tmp_path / "vae_fix.safetensors")  # as sdxl-vae-fp16-fix's single file: no prefix
    save_file({VAE_PREFIX + k: v for k, v in sd.items()}, tmp_path / "vae_prefixed.safetensors")
    base = folder_pipe(sdxl_dir)
    assert not same_weights(base.vae, other)
    for spec in ("vae_fix", "vae_fix.safetensors", "vae_prefixed.safetensors"):
        for path, config in ((sdxl_dir, None), (sdxl_file, sdxl_dir)):
            cfg = ModelConfig(path=str(path), config=config and str(config), vae=str(tmp_path / spec))
            pipe = load_pipeline(cfg)
            assert same_weights(pipe.vae, other), (spec, path)
            assert_same(pipe, base, ("unet", "text_encoder_2"))
            assert pipe.vae.config.scaling_factor == 0.13025, (spec, path)
    assert (
        load_pipeline(ModelConfig(path=str(sdxl_dir), vae=str(tmp_path / "vae_fix"))).vae.config.force_upcast is False
    )

    # a VAE folder whose config does not state the scale gets the base's, not diffusers' SD 1.x default 0.18215
    import json

    config_path = tmp_path / "vae_fix" / "config.json"
    config = json.loads(config_path.read_text())
    del config["scaling_factor"]
    config_path.write_text(json.dumps(config))
    pipe = load_pipeline(ModelConfig(path=str(sdxl_dir), vae=str(tmp_path / "vae_fix")))
    assert pipe.vae.config.scaling_factor == 0.13025 and same_weights(pipe.vae, other)


def test_model_realvisxl_loads_the_hub_id_with_the_sdxl_pipeline(sdxl_dir, monkeypatch):
    """model=realvisxl: RealVisXL V5.0 (diffusers layout) through StableDiffusionXLPipeline (from_pretrained is
    replaced: no download here)."""
    from helpers.config import compose_config

    calls, tiny = [], folder_pipe(sdxl_dir)

    def from_pretrained(path, **kwargs):
        calls.append((path, kwargs))
        return tiny

    cfg = compose_config(["model=realvisxl"]).model
    assert cfg.path == "SG161222/RealVisXL_V5.0" and cfg.family == ModelFamily.sdxl
    monkeypatch.setattr(StableDiffusionXLPipeline, "from_pretrained", from_pretrained)
    pipe = load_pipeline(cfg)
    assert calls[0][0] == "SG161222/RealVisXL_V5.0" and not calls[0][1]["add_watermarker"]
    assert isinstance(pipe, StableDiffusionXLPipeline)


def test_sdxl_export_refuses_an_sd1_lora_in_one_line(sdxl_dir, tiny_pipe_factory, tmp_path, capsys):
    from helpers.loras import make_lora

    sd1 = make_lora(tiny_pipe_factory(), tmp_path / "sd1.safetensors")
    out = tmp_path / "x.safetensors"
    assert cli(["export", "--base", str(sdxl_dir), "--lora", str(sd1), "--single-file", str(out)]) == 2
    assert "does not fit this SDXL model" in capsys.readouterr().err and not out.exists()
