"""`sdft export`: LoRAs merged into a base, written as a single file and/or a diffusers folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors import safe_open
from safetensors.torch import save_file

from helpers.loras import randomise_lora
from helpers.compare import render, max_diff
from sdft.adapters.extract import extract_file
from sdft.adapters.formats import save_lora
from sdft.adapters.kohya import kohya_metadata, save_kohya_lora
from sdft.adapters.lora import setup_trainable
from sdft.cli import main as cli
from sdft.config import AdapterConfig
from sdft.errors import ConfigError
from sdft.adapters.export import parse_lora
from sdft.run.train import run

EXACT = 1e-4  # fp32 merge + single-file round trip: measured ~3e-6


def from_single_file(path: Path, config: Path) -> StableDiffusionPipeline:
    return StableDiffusionPipeline.from_single_file(str(path), config=str(config), local_files_only=True)


def from_folder(path: Path) -> StableDiffusionPipeline:
    return StableDiffusionPipeline.from_pretrained(path, local_files_only=True)


def lora_file(pipe, path: Path, seed: int, unet_targets: list[str], text_encoder: bool, kohya: bool) -> Path:
    cfg = AdapterConfig(
        rank=4, alpha=2.0, unet_targets=unet_targets, text_encoder_targets=["attn"], train_text_encoder=text_encoder
    )
    setup_trainable(pipe.unet, pipe.text_encoder, cfg)
    randomise_lora([pipe.unet, pipe.text_encoder], seed, 0.2)
    if kohya:
        return save_kohya_lora(pipe.unet, pipe.text_encoder, path, kohya_metadata(base_model="tiny"))
    return save_lora(pipe.unet, pipe.text_encoder, path)


def test_two_weighted_loras_to_single_file_and_folder(tiny_dir, tiny_pipe_factory, tmp_path):
    first = lora_file(
        tiny_pipe_factory(), tmp_path / "a.safetensors", 1, ["attn1", "attn2", "ff", "proj"], True, kohya=True
    )
    second = lora_file(tiny_pipe_factory(), tmp_path / "b.safetensors", 2, ["attn1", "attn2"], False, kohya=False)
    reference = tiny_pipe_factory()  # both LoRAs active with their weights, not fused
    reference.load_lora_weights(str(first), adapter_name="a")
    reference.load_lora_weights(str(second), adapter_name="b")
    reference.set_adapters(["a", "b"], adapter_weights=[0.7, -0.4])
    want = render(reference)
    assert max_diff(want, render(tiny_pipe_factory())) > 1e-2

    single, folder = tmp_path / "merged.safetensors", tmp_path / "merged"
    code = cli(
        [
            "export",
            "--base",
            "tiny",
            "--lora",
            f"{first}:0.7",
            "--lora",
            f"{second}:-0.4",
            "--single-file",
            str(single),
            "--diffusers",
            str(folder),
            "--dtype",
            "fp32",
        ]
    )
    assert code == 0
    assert max_diff(render(from_single_file(single, tiny_dir)), want) <= EXACT
    assert max_diff(render(from_folder(folder)), want) <= EXACT

    # the single file is a base too (with --config), and fp16 output is fp16
    half = tmp_path / "half.safetensors"
    assert cli(["export", "--base", str(single), "--config", str(tiny_dir), "--single-file", str(half)]) == 0
    with safe_open(str(half), framework="pt") as f:
        keys = list(f.keys())
        assert f.get_tensor(next(k for k in keys if k.startswith("model.diffusion_model."))).dtype == torch.float16
    assert max_diff(render(from_single_file(half, tiny_dir)), want) <= 1e-2


def test_full_dreambooth_run_folder_exports_and_extracts(fast_config, tiny_dir, tiny_pipe_factory, tmp_path):
    summary = run(fast_config("adapter=full", "optim.lr=1e-3"))
    run_dir = tmp_path / "out"
    trained = from_folder(Path(summary["output"]))
    want = render(trained)
    single = tmp_path / "dreambooth.safetensors"
    assert cli(["export", "--base", str(run_dir), "--single-file", str(single), "--dtype", "fp32"]) == 0
    assert max_diff(render(from_single_file(single, tiny_dir)), want) <= EXACT

    # a LoRA extracted from the run at full rank: what the U-Net learnt, except its biases and norms
    lora = tmp_path / "extracted.safetensors"
    report = extract_file("tiny", str(run_dir), lora, rank=256)
    assert not report.text_encoder  # the run did not train the text encoder
    assert report.overall > 0.999 and any(".bias" in name for name in report.not_extracted)
    pipe = tiny_pipe_factory()
    base_error = max_diff(render(pipe), want)
    pipe.load_lora_weights(str(lora))
    assert max_diff(render(pipe), want) < 0.5 * base_error


def test_ckpt_output_needs_the_flag_and_warns(tiny_dir, tmp_path, capsys):
    ckpt = tmp_path / "model.ckpt"
    assert cli(["export", "--base", "tiny", "--single-file", str(ckpt)]) == 2
    assert "pickle" in capsys.readouterr().err and not ckpt.exists()
    with pytest.warns(UserWarning, match="pickle"):
        assert cli(["export", "--base", "tiny", "--single-file", str(ckpt), "--ckpt", "--dtype", "fp32"]) == 0
    pipe = from_single_file(ckpt, tiny_dir)
    assert max_diff(render(pipe), render(from_folder(tiny_dir))) <= EXACT


def test_errors_are_one_line_messages(tmp_path, capsys):
    assert cli(["export", "--base", "tiny"]) == 2
    assert "name an output" in capsys.readouterr().err
    bad = tmp_path / "sd15.safetensors"
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{stem}.lora_down.weight": torch.zeros(4, 320), f"{stem}.lora_up.weight": torch.zeros(320, 4)}, bad)
    assert cli(["export", "--base", "tiny", "--lora", str(bad), "--single-file", str(tmp_path / "x.safetensors")]) == 2
    assert "do not fit the layer" in capsys.readouterr().err
    assert parse_lora(f"{bad}:0.5") == (bad, 0.5) and parse_lora(str(bad)) == (bad, 1.0)
    with pytest.raises(ConfigError, match="no such file"):
        parse_lora(str(tmp_path / "missing.safetensors:0.5"))
