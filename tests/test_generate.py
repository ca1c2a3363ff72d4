"""`sdft generate`: txt2img / img2img, LoRAs (ours and kohya) switched without reloading the base, sweeps, metadata."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

import sdft.cli.generate as generate_cli
import sdft.generation.generator as generator_module
from helpers.loras import randomise_lora
from sdft.adapters.formats import save_lora
from sdft.adapters.kohya import LoraFormatError, save_kohya_lora
from sdft.adapters.lora import setup_trainable
from sdft.cli.generate import main
from sdft.images_grid import HEADER_HEIGHT, LABEL_WIDTH
from sdft.config import AdapterConfig, ModelConfig
from sdft.errors import ConfigError
from sdft.generation.generator import Generator
from sdft.generation.infotext import create_infotext, lora_short_hash
from sdft.generation.params import SCHEDULERS, GenerationParams, LoraSpec
from sdft.generation.run import run_generation

FAST = dict(prompt="photo of sks dog", steps=2, width=64, height=64, seed=1234)


def params(**overrides) -> GenerationParams:
    return GenerationParams(**{**FAST, **overrides})


@pytest.fixture(scope="module")
def gen(tiny_cache) -> Generator:
    return Generator(ModelConfig(path="tiny", cache_dir=str(tiny_cache)), device="cpu")


def _make_lora(pipe, seed: int, adapter: AdapterConfig):
    setup_trainable(pipe.unet, pipe.text_encoder, adapter)
    randomise_lora([pipe.unet, pipe.text_encoder], seed, 0.2)


@pytest.fixture(scope="module")
def loras(tiny_pipe_factory, tmp_path_factory) -> dict:
    """a: U-Net + text encoder, alpha != rank, in our diffusers format and as kohya; b: U-Net only (kohya)."""
    root = tmp_path_factory.mktemp("loras")
    pipe = tiny_pipe_factory()
    _make_lora(pipe, 0, AdapterConfig(rank=4, alpha=2.0))
    a = save_lora(pipe.unet, pipe.text_encoder, root / "a" / "lora" / "pytorch_lora_weights.safetensors")
    a_kohya = save_kohya_lora(pipe.unet, pipe.text_encoder, root / "a_kohya.safetensors", {})
    pipe = tiny_pipe_factory()
    _make_lora(pipe, 1, AdapterConfig(rank=2, train_text_encoder=False, unet_targets=["attn2"]))
    b = save_kohya_lora(pipe.unet, None, root / "style_b.safetensors", {})
    return {"a": str(a), "a_kohya": str(a_kohya), "b": str(b)}


def read_parameters(path) -> str:
    with Image.open(path) as image:
        return image.text["parameters"]


def test_txt2img_cli_writes_n_files_with_a1111_parameters(tiny_cache, tmp_path):
    out = tmp_path / "out"
    code = main(
        [
            "--prompt",
            "photo of sks dog",
            "--negative-prompt",
            "blurry, bad",
            "--steps",
            "2",
            "--seed",
            "42",
            "--batch-size",
            "2",
            "--batch-count",
            "2",
            "--scheduler",
            "euler_a",
            "--guidance",
            "7.5",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["00000-42.png", "00001-43.png", "00002-44.png", "00003-45.png"]
    assert read_parameters(files[3]) == (
        "photo of sks dog\nNegative prompt: blurry, bad\n"
        "Steps: 2, Sampler: Euler a, CFG scale: 7.5, Seed: 45, Size: 64x64, Model: tiny"
    )
    assert not list(out.glob("grid-*.png"))  # nothing swept, no grid


def test_infotext_follows_a1111():
    text = create_infotext(
        prompt="a, b",
        negative_prompt="",
        steps=20,
        sampler="DPM++ 2M Karras",
        cfg_scale=7,
        seed=1,
        width=512,
        height=768,
        model="my:model",
        denoising_strength=0.6,
        loras=[("face", 0.8, "0123456789ab"), ("sty,le", 1.0, "ba9876543210")],
    )
    assert text == (
        "a, b <lora:face:0.8> <lora:style:1.0>\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.0, Seed: 1, Size: 512x768, Model: mymodel, "
        'Denoising strength: 0.6, Lora hashes: "face: 0123456789ab, style: ba9876543210"'
    )
    assert LoraSpec.parse("C:/x/y.safetensors:0.5") == LoraSpec("C:/x/y.safetensors", 0.5)
    assert LoraSpec.parse("C:/x/y.safetensors") == LoraSpec("C:/x/y.safetensors", 1.0)


def test_seeds_are_reproducible_and_per_image(gen):
    batch = gen.render(params(batch_size=2))
    again = gen.render(params(batch_size=2))
    second_alone = gen.render(params(seed=1235))
    assert np.array_equal(batch, again)
    assert np.abs(batch[1] - second_alone[0]).max() <= 1e-5  # image i of a batch uses seed + i
    assert np.abs(batch[0] - batch[1]).max() > 1e-3


def test_img2img_strength_changes_the_output(gen, tmp_path):
    init = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    txt = gen.render(params(steps=5))
    weak = gen.render(params(steps=5, init_image=init, strength=0.2))
    strong = gen.render(params(steps=5, init_image=init, strength=0.8))
    assert np.abs(weak - txt).max() > 1e-2 and np.abs(strong - weak).max() > 1e-2
    unet = gen.pipe.unet
    assert gen.img2img_pipe.unet is unet  # same components, nothing reloaded
    (item,) = gen.generate(params(steps=5, init_image=init, strength=0.8))
    assert item.infotext.endswith("Denoising strength: 0.8")
    with pytest.raises(ConfigError, match="int\\(steps \\* strength\\)"):
        gen.render(params(steps=2, init_image=init, strength=0.2))


def test_two_loras_at_different_weights(gen, loras):
    base = gen.render(params(loras=[]))
    both = gen.render(params(loras=[LoraSpec(loras["a"], 1.0), LoraSpec(loras["b"], 1.0)]))
    other = gen.render(params(loras=[LoraSpec(loras["a"], 0.3), LoraSpec(loras["b"], 1.0)]))
    zero = gen.render(params(loras=[LoraSpec(loras["a"], 0.0), LoraSpec(loras["b"], 0.0)]))
    assert np.abs(both - base).max() > 1e-3 and np.abs(other - both).max() > 1e-3
    assert np.abs(zero - base).max() <= 1e-5
    (item,) = gen.generate(params(loras=[LoraSpec(loras["a"], 0.5), LoraSpec(loras["b"], 1.0)]))
    assert item.infotext.startswith("photo of sks dog <lora:a:0.5> <lora:style_b:1.0>\n")
    assert f'Lora hashes: "a: {lora_short_hash(loras["a"])}, style_b: {lora_short_hash(loras["b"])}"' in item.infotext
    assert np.abs(gen.render(params()) - base).max() == 0  # no LoRA again: exactly the base


def test_kohya_and_diffusers_files_of_one_lora_give_the_same_image(gen, loras):
    ours = gen.render(params(loras=[loras["a"]]))
    kohya = gen.render(params(loras=[loras["a_kohya"]]))
    assert np.abs(ours - gen.render(params())).max() > 1e-3
    assert np.abs(ours - kohya).max() <= 1e-4


def test_switching_loras_never_reloads_the_base(tiny_cache, loras, monkeypatch):
    calls = []
    real = generator_module.load_pipeline
    monkeypatch.setattr(generator_module, "load_pipeline", lambda cfg: calls.append(cfg) or real(cfg))
    g = Generator(ModelConfig(path="tiny", cache_dir=str(tiny_cache)), device="cpu")
    unet, te = id(g.pipe.unet), id(g.pipe.text_encoder)
    first = g.render(params(loras=[loras["a"]]))
    g.render(params(loras=[LoraSpec(loras["b"], 0.7)]))
    assert np.array_equal(g.render(params(loras=[loras["a"]])), first)
    assert len(calls) == 1 and (id(g.pipe.unet), id(g.pipe.text_encoder)) == (unet, te)
    assert len(g.loaded_loras) == 2  # cached by path: "a" was loaded once
    g.unload_lora(loras["a"])
    assert [lora.name for lora in g.loaded_loras] == ["style_b"]
    assert "a" not in g.pipe.get_list_adapters().get("unet", [])


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_constructs_and_runs(gen, name):
    if name == "lms" and importlib.util.find_spec("scipy") is None:
        with pytest.raises(ConfigError, match="lms"):  # diffusers' LMS needs scipy: a clear error, not a crash
            gen.render(params(scheduler=name))
        return
    image = gen.render(params(scheduler=name))
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()


def test_sweep_writes_one_grid_of_the_right_size(gen, loras, tmp_path):
    result = run_generation(
        gen,
        params(batch_size=2, loras=[LoraSpec(loras["b"], 1.0)]),
        tmp_path,
        guidance=[3.0, 7.5],
        lora_weights=[0.0, 1.0],
    )
    assert len(result.files) == 8 and result.seeds == [1234, 1235]
    assert result.rows == [
        "CFG 3.0, style_b: 0.0",
        "CFG 3.0, style_b: 1.0",
        "CFG 7.5, style_b: 0.0",
        "CFG 7.5, style_b: 1.0",
    ]
    with Image.open(result.grid) as grid:
        assert grid.size == (LABEL_WIDTH + 2 * 128, HEADER_HEIGHT + 4 * 128)
        assert "Seed: 1234" in grid.text["parameters"]
    assert "<lora:style_b:0.0>" in read_parameters(result.files[0])
    assert "CFG scale: 7.5" in read_parameters(result.files[-1])


def test_a_lora_that_does_not_fit_fails_naming_its_keys(gen, tmp_path):
    bad = tmp_path / "sdxl.safetensors"
    key = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    safetensors.torch.save_file(
        {f"{key}.lora_down.weight": torch.zeros(4, 768), f"{key}.lora_up.weight": torch.zeros(768, 4)}, str(bad)
    )
    before = gen.pipe.get_list_adapters()
    with pytest.raises(LoraFormatError, match=key):
        gen.render(params(loras=[str(bad)]))
    assert gen.pipe.get_list_adapters() == before
    with pytest.raises(ConfigError, match="no such file"):
        gen.render(params(loras=[str(tmp_path / "missing.safetensors")]))


def test_register_adds_a_generate_subcommand():
    import argparse

    parser = argparse.ArgumentParser(prog="sdft")
    generate_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["generate", "--prompt", "x", "--lora", "a.safetensors:0.5", "--guidance", "5,7"])
    assert args.func is generate_cli.run_from_args and args.lora == ["a.safetensors:0.5"]
    assert args.guidance == "5,7" and args.model == "tiny" and args.scheduler == "dpmpp_2m_karras"


def test_a_zero_snr_lora_is_sampled_with_the_zero_snr_ddim(tmp_path, tiny_dir, caplog):
    """sdft/generation/lora_scheduler.py sampling_scheduler wired into the Generator: the LoRA's training config picks the scheduler."""
    import json
    import logging

    from safetensors.torch import load_file, save_file

    from helpers.loras import make_lora
    from sdft.generation.generator import Generator
    from sdft.generation.params import GenerationParams
    from sdft.models.tiny import build_tiny_pipeline

    plain = make_lora(build_tiny_pipeline(), tmp_path / "plain" / "pytorch_lora_weights.safetensors")
    zsnr = tmp_path / "zsnr.safetensors"
    trained = {"loss": {"zero_terminal_snr": True}, "model": {"prediction_type": "v_prediction"}}
    save_file(load_file(str(plain)), str(zsnr), {"sdft_config": json.dumps(trained)})
    gen = Generator(str(tiny_dir), device="cpu")
    params = dict(prompt="photo of sks person", steps=2, seed=0, width=32, height=32, scheduler="euler")
    with caplog.at_level(logging.WARNING):
        out = gen.generate(GenerationParams(**params, loras=[str(zsnr)]))
    scheduler = gen.pipe.scheduler
    assert type(scheduler).__name__ == "DDIMScheduler" and scheduler.config.rescale_betas_zero_snr
    assert scheduler.config.prediction_type == "v_prediction" and "Sampler: DDIM" in out[0].infotext
    assert "zero terminal SNR" in caplog.text
    out = gen.generate(GenerationParams(**params, loras=[str(plain)]))
    assert type(gen.pipe.scheduler).__name__ == "EulerDiscreteScheduler" and "Sampler: Euler" in out[0].infotext


def test_without_guidance_the_model_picks_it(tiny_cache, tmp_path):
    """No --guidance: SD's 7.5, but the toy's 3 (its model card's; at 7.5 its 32 px images come out garbled)."""
    for model, expected in (("toy", "CFG scale: 3.0"), ("tiny", "CFG scale: 7.5")):
        out = tmp_path / model
        argv = ["--model", model, "--prompt", "a sks dog", "--steps", "2", "--seed", "1", "--out", str(out)]
        assert main([*argv, "--device", "cpu"]) == 0
        assert f"{expected}," in read_parameters(next(out.glob("*.png")))
    assert Generator(ModelConfig(path="toy"), device="cpu").default_guidance() == 3.0
