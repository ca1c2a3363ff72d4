"""Single-file (original SD layout) export: diffusers' own loader reads it back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    infer_diffusers_model_type,
)
from safetensors.torch import load_file

from helpers.loras import randomise_lora
from helpers.compare import render
from sdft.adapters.lora import setup_trainable
from sdft.config import AdapterConfig
from sdft.models.original_layout import (
    SingleFileError,
    unet_to_original,
    vae_to_original,
)
from sdft.families.single_file import pipeline_to_original, save_single_file
from sdft.models.tiny import ensure_tiny_model

FP16_TOL = 1e-2  # fp16 weights, fp32 compute: measured 1.1e-3 on the tiny model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_model(tmp_path_factory.mktemp("cache"))


def load_dir(model_dir: Path) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_single(path: Path, model_dir: Path) -> StableDiffusionPipeline:
    # config= supplies the architecture; without it diffusers guesses SD 1.5 from the keys and goes to the hub
    pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(model_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float16, FP16_TOL)], ids=["fp32", "fp16"])
def test_round_trip_through_from_single_file(model_dir: Path, tmp_path: Path, dtype: torch.dtype, tol: float) -> None:
    pipe = load_dir(model_dir)
    path = save_single_file(pipe, tmp_path / "model.safetensors", dtype=dtype)
    assert {v.dtype for v in load_file(path).values()} == {dtype}
    loaded = load_single(path, model_dir)
    assert float(np.abs(render(loaded) - render(pipe)).max()) <= tol
    if dtype == torch.float32:
        for name in ("unet", "vae", "text_encoder"):
            want, got = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
            assert want.keys() == got.keys(), name
            assert all(torch.equal(want[k], got[k]) for k in want), name


def test_original_key_names(model_dir: Path) -> None:
    sd = pipeline_to_original(load_dir(model_dir))
    assert infer_diffusers_model_type(sd) == "v1"
    for key in (
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "model.diffusion_model.middle_block.2.emb_layers.1.weight",
        "model.diffusion_model.output_blocks.2.1.conv.weight",  # up block without attention: upsampler in slot 1
        "model.diffusion_model.output_blocks.5.2.conv.weight",  # with attention: slot 2
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.decoder.up.3.block.2.conv2.weight",
        "first_stage_model.encoder.down.0.block.0.conv1.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
    ):
        assert key in sd, key
    assert sd["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1)  # 1x1 conv, as in SD
    assert sd["first_stage_model.decoder.mid.attn_1.proj_out.weight"].ndim == 4


@pytest.mark.parametrize("layers_per_block", [1, 2])
def test_inverse_of_diffusers_converters(layers_per_block: int) -> None:
    """diffusers' original->diffusers converters undo our mapping exactly, for other block counts too."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(16, 32, 32),
        layers_per_block=layers_per_block,
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=4,
        cross_attention_dim=16,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16),
        layers_per_block=layers_per_block,
        norm_num_groups=8,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
    )
    for model, to_original, back, prefix in (
        (unet, unet_to_original, convert_ldm_unet_checkpoint, "model.diffusion_model."),
        (vae, vae_to_original, convert_ldm_vae_checkpoint, "first_stage_model."),
    ):
        sd = model.state_dict()
        original = {prefix + k: v for k, v in to_original(sd, model.config).items()}
        restored = back(original, model.config)
        assert restored.keys() == sd.keys(), sorted(set(restored) ^ set(sd))[:10]
        assert all(torch.equal(restored[k], sd[k]) for k in sd)


def test_text_encoder_keys_invert(model_dir: Path) -> None:
    pipe = load_dir(model_dir)
    original = {k: v for k, v in pipeline_to_original(pipe).items() if k.startswith("cond_stage_model.")}
    restored = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(original).items()}
    assert restored.keys() == pipe.text_encoder.state_dict().keys()


def test_lora_is_merged_into_the_file(model_dir: Path, tmp_path: Path) -> None:
    pipe = load_dir(model_dir)
    targets = {"unet_targets": ["attn1", "attn2", "ff", "proj"], "text_encoder_targets": ["attn", "mlp"]}
    cfg = AdapterConfig(rank=4, alpha=2.0, **targets)
    setup_trainable(pipe.unet, pipe.text_encoder, cfg)
    randomise_lora([pipe.unet, pipe.text_encoder], 1, 0.1)
    want = render(pipe)
    loaded = load_single(save_single_file(pipe, tmp_path / "merged.safetensors", dtype=torch.float32), model_dir)
    assert float(np.abs(render(loaded) - want).max()) <= 1e-4
    assert not any("lora" in k or "base_layer" in k for k in load_file(tmp_path / "merged.safetensors"))


def test_unmapped_key_is_an_error(model_dir: Path) -> None:
    unet = load_dir(model_dir).unet
    sd = dict(unet.state_dict(), **{"extra_block.0.weight": torch.zeros(1)})
    with pytest.raises(SingleFileError, match="extra_block.0.weight"):
        unet_to_original(sd, unet.config)
