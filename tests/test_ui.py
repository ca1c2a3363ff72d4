"""`sdft ui` without a browser: LoRA lines, the scan, renders saved with A1111 metadata, no base reload, errors."""

from __future__ import annotations

import gradio as gr
import pytest
import safetensors.torch
import torch
from PIL import Image
from helpers.loras import make_lora

import sdft.generation.generator as generator_module
from sdft.cli import build_parser
from sdft.config import ModelConfig
from sdft.errors import ConfigError
from sdft.generation.generator import Generator
from sdft.generation.params import LoraSpec
from sdft.ui.app import build_app, for_people
from sdft.generation.lora_scan import find_loras
from sdft.ui.session import UiSession, parse_lora_lines

FAST = dict(prompt="photo of sks dog", scheduler="euler", steps=2, guidance=7.5, width=64, height=64, seed=1234)


@pytest.fixture(scope="module")
def lora_files(tiny_pipe_factory, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ui-loras")
    return {
        "a": make_lora(tiny_pipe_factory(), root / "run" / "face" / "lora" / "pytorch_lora_weights.safetensors"),
        "b": make_lora(tiny_pipe_factory(), root / "style_b.safetensors", seed=1),
    }


def test_lora_lines_parse_paths_and_weights():
    text = "outputs/run/face/lora:0.8\n\n# a comment\n  C:/loras/style.safetensors  \nx.safetensors:-0.5\n"
    assert parse_lora_lines(text) == [
        LoraSpec("outputs/run/face/lora", 0.8),
        LoraSpec("C:/loras/style.safetensors", 1.0),
        LoraSpec("x.safetensors", -0.5),
    ]
    assert parse_lora_lines("") == [] and parse_lora_lines(None) == []
    with pytest.raises(ConfigError, match="line 2"):
        parse_lora_lines("a.safetensors\nb.safetensors:nan")


def test_scan_lists_run_folders_once_and_lora_files_but_not_models(tmp_path):
    lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 4)}
    run = tmp_path / "run" / "face" / "lora"
    run.mkdir(parents=True)
    safetensors.torch.save_file(lora, str(run / "pytorch_lora_weights.safetensors"))
    safetensors.torch.save_file(lora, str(run / "run.safetensors"))  # the kohya twin: not listed again
    safetensors.torch.save_file(lora, str(tmp_path / "style.safetensors"))
    (tmp_path / "model" / "unet").mkdir(parents=True)
    safetensors.torch.save_file(
        {"conv_in.weight": torch.zeros(2)}, str(tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    )
    assert sorted(find_loras(tmp_path)) == sorted([str(run), str(tmp_path / "style.safetensors")])
    with pytest.raises(ConfigError, match="no such folder"):
        find_loras(tmp_path / "missing")


def test_renders_are_saved_like_sdft_generate(tiny_cache, lora_files, tmp_path):
    session = UiSession(Generator(ModelConfig(path="tiny", cache_dir=str(tiny_cache)), device="cpu"), tmp_path)
    render = session.generate(**FAST, negative_prompt="blurry", batch_size=2, lora_text=f"{lora_files['b']}:0.5")
    assert [p.name for p in render.files] == ["00000-1234.png", "00001-1235.png"] and render.seeds == [1234, 1235]
    with Image.open(render.files[1]) as image:
        assert image.size == (64, 64)
        assert image.text["parameters"] == render.infotexts[1]
    assert render.infotexts[1].startswith("photo of sks dog <lora:style_b:0.5>\nNegative prompt: blurry\n")
    assert "Steps: 2, Sampler: Euler, CFG scale: 7.5, Seed: 1235, Size: 64x64, Model: tiny" in render.infotexts[1]
    init = Image.open(render.files[0]).convert("RGB")
    (again,) = session.generate(**FAST, init_image=init, strength=0.5).files
    with Image.open(again) as image:
        assert again.name == "00002-1234.png" and "Denoising strength: 0.5" in image.text["parameters"]
    assert "<lora:" not in image.text["parameters"]  # the LoRA box was empty this time: base alone


def test_switching_and_reweighting_loras_never_reloads_the_base(tiny_cache, lora_files, tmp_path, monkeypatch):
    calls = []
    real = generator_module.load_pipeline
    monkeypatch.setattr(generator_module, "load_pipeline", lambda cfg: calls.append(cfg) or real(cfg))
    session = UiSession(Generator(ModelConfig(path="tiny", cache_dir=str(tiny_cache)), device="cpu"), tmp_path)
    pipe, unet = session.generator.pipe, session.generator.pipe.unet
    build_app(session)  # building the page loads nothing either

    def pixels(lora_text):
        (path,) = session.generate(**FAST, lora_text=lora_text).files
        return torch.tensor(list(Image.open(path).convert("L").getdata()), dtype=torch.float32)

    base = pixels("")
    a1 = pixels(f"{lora_files['a']}:1")
    a_weak = pixels(f"{lora_files['a']}:0.3")
    both = pixels(f"{lora_files['a']}:1\n{lora_files['b']}:1")
    assert (a1 - base).abs().max() > 0 and (a_weak - a1).abs().max() > 0 and (both - a1).abs().max() > 0
    assert torch.equal(pixels(f"{lora_files['a']}:1"), a1) and torch.equal(pixels(""), base)
    assert len(calls) == 1 and session.generator.pipe is pipe and session.generator.pipe.unet is unet
    assert sorted(lora.name for lora in session.generator.loaded_loras) == ["face", "style_b"]  # loaded once each
    assert "No LoRA loaded" not in session.lora_status() and "not in use" in session.lora_status()


def test_errors_reach_the_page_as_readable_messages(tiny_cache, tmp_path):
    session = UiSession(Generator(ModelConfig(path="tiny", cache_dir=str(tiny_cache)), device="cpu"), tmp_path)
    check = for_people(session.check_loras)
    with pytest.raises(gr.Error, match="no such file"):
        check(str(tmp_path / "missing.safetensors"))
    sdxl = tmp_path / "sdxl.safetensors"
    key = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    safetensors.torch.save_file(
        {f"{key}.lora_down.weight": torch.zeros(4, 768), f"{key}.lora_up.weight": torch.zeros(768, 4)}, str(sdxl)
    )
    with pytest.raises(gr.Error, match=key):
        check(str(sdxl))
    with pytest.raises(gr.Error, match="multiples of 8"):
        for_people(session.generate)(**{**FAST, "width": 60})
    with pytest.raises(gr.Error, match="Pick a LoRA"):
        for_people(session.add_lora)("", None, 1.0)
    assert session.generate(**FAST).files  # still usable after the errors
    assert session.check_loras("") == "No LoRA loaded: the base model alone."


def test_add_lora_appends_or_reweights(lora_files, tiny_cache, tmp_path):
    session = UiSession(Generator(ModelConfig(path="tiny", cache_dir=str(tiny_cache)), device="cpu"), tmp_path)
    a, b = str(lora_files["a"]), str(lora_files["b"])
    text = session.add_lora(f"{a}:0.8", b, 0.5)
    assert text == f"{a}:0.8\n{b}:0.5"
    assert session.add_lora(text, a, 0.25) == f"{b}:0.5\n{a}:0.25"


def test_sdft_ui_command_is_registered():
    args = build_parser().parse_args(["ui", "--lora", "a.safetensors:0.5", "--port", "7861", "--out", "o"])
    assert args.func.__module__ == "sdft.cli.ui" and args.lora == ["a.safetensors:0.5"]
    assert (args.host, args.port, args.out, args.model) == ("127.0.0.1", 7861, "o", "tiny")


def test_the_cfg_slider_starts_at_the_models_guidance(tmp_path):
    """The toy base's page starts at its guidance (3), not SD's 7.5, which garbles its images."""
    app = build_app(UiSession(Generator(ModelConfig(path="toy"), device="cpu"), tmp_path))
    sliders = [b for b in app.blocks.values() if isinstance(b, gr.Slider) and b.label == "CFG scale"]
    assert sliders and all(s.value == 3.0 for s in sliders)
