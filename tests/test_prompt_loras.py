"""A1111's `<lora:name:weight>` in prompts (issue 33 #13): parsed out of the text, names resolved in the LoRA folder
(file stem, a run's phase, `ss_output_name`), applied with the LoRA box; `sdft generate` and `sdft ui` alike."""

from __future__ import annotations

import os
import shutil

import gradio as gr
import numpy as np
import pytest
import safetensors.torch
from PIL import Image
from helpers.loras import make_lora

from sdft.cli import build_parser
from sdft.cli.generate import run_from_args
from sdft.config import ModelConfig
from sdft.errors import ConfigError
from sdft.generation.generator import Generator
from sdft.generation.params import GenerationParams
from sdft.ui.app import for_people
from sdft.ui.session import UiSession

FAST = dict(scheduler="euler", steps=2, guidance=7.5, width=64, height=64, seed=1234)


@pytest.fixture(scope="module")
def loras(tiny_pipe_factory, tmp_path_factory) -> dict:
    """A LoRA folder: a plain file, a run's lora/ folder (phase `face`), a file known by its ss_output_name."""
    root = tmp_path_factory.mktemp("lora-dir")
    style = make_lora(tiny_pipe_factory(), root / "style_b.safetensors", seed=1)
    run = make_lora(tiny_pipe_factory(), root / "run" / "face" / "lora" / "pytorch_lora_weights.safetensors", seed=2)
    tensors = safetensors.torch.load_file(str(style))
    aliased = root / "downloads" / "x9f3.safetensors"
    aliased.parent.mkdir()
    safetensors.torch.save_file(tensors, str(aliased), metadata={"ss_output_name": "film_style"})
    return {"root": root, "style": style, "run": run, "aliased": aliased}


@pytest.fixture(scope="module")
def gen(tiny_cache) -> Generator:
    return Generator(ModelConfig(path="tiny", cache_dir=str(tiny_cache)), device="cpu")


def test_tags_are_split_from_the_prompt():
    from sdft.generation.prompt_loras import split_prompt_loras

    text = "photo of <sks> dog <lora:style_b:0.5>, night <lora:face> <lyco:film:0.3:0.3>"
    assert split_prompt_loras(text) == ("photo of <sks> dog, night", [("style_b", 0.5), ("face", 1.0), ("film", 0.3)])
    assert split_prompt_loras("<lora:a:te=0.7:unet=0.7>") == ("", [("a", 0.7)])
    assert split_prompt_loras("no tags <sks>") == ("no tags <sks>", [])
    with pytest.raises(ConfigError, match="not a number"):
        split_prompt_loras("a <lora:style:strong>")
    with pytest.raises(ConfigError, match="separate text-encoder and U-Net weights"):
        split_prompt_loras("a <lora:style:1:0.5>")


def test_names_resolve_like_a1111_and_unknown_ones_are_clear_errors(loras):
    from sdft.generation.prompt_loras import resolve_lora_name

    root = loras["root"]
    assert resolve_lora_name("style_b", root) == loras["style"]  # the file stem
    assert resolve_lora_name("face", root) == loras["run"]  # a run's diffusers file: its phase, as infotexts write
    assert resolve_lora_name("film_style", root) == loras["aliased"]  # kohya's ss_output_name (A1111's alias)
    assert resolve_lora_name("x9f3", root) == loras["aliased"]
    with pytest.raises(ConfigError, match=r"<lora:style_c>: no LoRA of that name .* Did you mean style_b"):
        resolve_lora_name("style_c", root)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_lora_name("style_b", root / "missing")


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_sdft_generate_reads_prompt_tags_as_loras(gen, loras, tmp_path):
    def generate(out, *argv):
        args = build_parser().parse_args(["generate", "--seed", "7", "--steps", "2", "--out", str(out), *argv])
        assert run_from_args(args, generator=gen) == 0
        (png,) = sorted(out.glob("*.png"))
        return png

    tagged = generate(tmp_path / "tag", "-p", "photo of sks dog <lora:style_b:0.5>", "--lora-dir", str(loras["root"]))
    listed = generate(tmp_path / "box", "-p", "photo of sks dog", "--lora", f"{loras['style']}:0.5")
    base = generate(tmp_path / "base", "-p", "photo of sks dog")
    assert np.array_equal(_pixels(tagged), _pixels(listed))  # the same LoRA at the same weight...
    assert np.abs(_pixels(tagged) - _pixels(base)).max() > 0  # ...which changes the image
    with Image.open(tagged) as png:  # the tag left the text (the infotext writes it once, A1111's way)
        assert png.text["parameters"].startswith("photo of sks dog <lora:style_b:0.5>\nSteps: 2")
    with pytest.raises(ConfigError, match="<lora:nope>: no LoRA of that name"):
        generate(tmp_path / "bad", "-p", "x <lora:nope:1>", "--lora-dir", str(loras["root"]))
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").glob("*.png"))


def test_ui_prompt_tags_join_the_lora_box(gen, loras, tmp_path):
    session = UiSession(gen, tmp_path / "ui")
    render = session.generate(
        prompt="photo <lora:film_style:0.25>",
        lora_text=f"{loras['style']}:0.5",
        lora_dir=str(loras["root"]),
        **FAST,
    )
    assert [(lora.path, w) for lora, w in gen.active] == [(loras["style"], 0.5), (loras["aliased"], 0.25)]
    assert render.infotexts[0].startswith("photo <lora:style_b:0.5> <lora:x9f3:0.25>\n")
    assert "Lora hashes" in render.infotexts[0]
    with pytest.raises(gr.Error, match="<lora:nope>"):
        for_people(session.generate)(prompt="photo <lora:nope>", lora_dir=str(loras["root"]), **FAST)
    with pytest.raises(gr.Error, match="listed twice"):  # the same file in the box and the prompt
        for_people(session.generate)(
            prompt="photo <lora:style_b>", lora_text=str(loras["style"]), lora_dir=str(loras["root"]), **FAST
        )


def test_the_api_strips_tags_too(gen, loras, tmp_path, monkeypatch):
    """Generator.generate (the Python API) applies the tags; the default folder is ./outputs."""
    outputs = tmp_path / "outputs"
    shutil.copytree(loras["root"], outputs)
    monkeypatch.chdir(tmp_path)
    (image,) = gen.generate(GenerationParams(prompt="dog <lora:style_b>", **FAST))
    assert image.infotext.startswith("dog <lora:style_b:1.0>\n")
    assert gen.active[0][0].path == (outputs / "style_b.safetensors").resolve()
    assert os.path.samefile(gen.active[0][0].path, outputs / "style_b.safetensors")
