"""kohya / A1111 LoRA files: exact round trips through diffusers' loader, metadata, and import errors."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from helpers.loras import randomise_lora
from helpers.compare import render
from sdft.adapters.formats import save_lora
from sdft.adapters.kohya import (
    LoraFormatError,
    check_lora_fits,
    kohya_metadata,
    load_kohya_lora,
    save_kohya_lora,
    tag_frequency,
    to_kohya,
)
from sdft.adapters.lora import has_lora, setup_trainable
from sdft.config import AdapterConfig, SdftConfig
from sdft.errors import SdftError
from sdft.models.tiny import build_tiny_pipeline

PRESETS = {  # conf/adapter/*.yaml target groups
    "lora_attn": (["attn1", "attn2"], ["attn"]),
    "lora_attn_ff": (["attn1", "attn2", "ff"], ["attn", "mlp"]),
    "lora_all": (["attn1", "attn2", "ff", "proj"], ["attn", "mlp"]),
}
RANK, ALPHA = 4, 2.0  # alpha != rank: a file that drops alpha is caught
FP16_TOL = 1e-3  # fp16 LoRA weights: measured <= 3e-5 on the tiny model


@functools.cache
def base_image() -> np.ndarray:
    return render(fresh_pipe())


def fresh_pipe():
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def lora_pipe(preset: str = "lora_all", text_encoder: bool = True):
    """A tiny pipeline with LoRA on the preset's targets, its weights seeded random (so they matter)."""
    pipe = fresh_pipe()
    unet_targets, te_targets = PRESETS[preset]
    cfg = AdapterConfig(
        rank=RANK,
        alpha=ALPHA,
        unet_targets=unet_targets,
        text_encoder_targets=te_targets,
        train_text_encoder=text_encoder,
    )
    setup_trainable(pipe.unet, pipe.text_encoder, cfg)
    randomise_lora([pipe.unet, pipe.text_encoder], 1, 0.1)
    return pipe


def peft_state(model) -> dict[str, torch.Tensor]:
    return get_peft_model_state_dict(model, adapter_name="default") if has_lora(model) else {}


def assert_same_state(got: dict, want: dict, atol: float = 0.0) -> None:
    assert got.keys() == want.keys(), sorted(set(got) ^ set(want))[:10]
    for key in want:
        assert torch.allclose(got[key].float(), want[key].float(), atol=atol, rtol=0), key


def metadata(**extra) -> dict[str, str]:
    return kohya_metadata(base_model="tiny", **extra)


@pytest.mark.parametrize("text_encoder", [True, False], ids=["te", "no_te"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_round_trip(preset: str, text_encoder: bool, tmp_path: Path) -> None:
    """kohya fp32 / fp16 and the diffusers file: load_lora_weights into a fresh pipeline reproduces the outputs."""
    pipe = lora_pipe(preset, text_encoder)
    want = render(pipe)
    assert np.abs(want - base_image()).max() > 1e-2  # the LoRA changes the image
    unet_sd, te_sd = peft_state(pipe.unet), peft_state(pipe.text_encoder)
    files = {
        "kohya": (save_kohya_lora(pipe.unet, pipe.text_encoder, tmp_path / "k.safetensors", metadata()), 1e-4),
        "kohya_fp16": (
            save_kohya_lora(pipe.unet, pipe.text_encoder, tmp_path / "k16.safetensors", metadata(), fp16=True),
            FP16_TOL,
        ),
        "diffusers": (save_lora(pipe.unet, pipe.text_encoder, tmp_path / "d.safetensors"), 1e-4),
    }
    for fmt, (path, tol) in files.items():
        loaded = fresh_pipe()
        loaded.load_lora_weights(str(path))
        assert has_lora(loaded.text_encoder) == text_encoder, fmt
        err = float(np.abs(render(loaded) - want).max())
        assert err <= tol, (fmt, err)
        # import back: same peft state dicts, by model names and by decoding alone
        atol = 1e-3 if fmt == "kohya_fp16" else 0.0
        for got_unet, got_te, alphas in (
            load_kohya_lora(path, loaded.unet, loaded.text_encoder),
            load_kohya_lora(path),
        ):
            assert_same_state(got_unet, unet_sd, atol)
            assert_same_state(got_te, te_sd, atol)
            assert set(alphas.values()) == {ALPHA}


def test_kohya_keys_shapes_and_alpha(tmp_path: Path) -> None:
    pipe = lora_pipe("lora_all")
    path = save_kohya_lora(pipe.unet, pipe.text_encoder, tmp_path / "k.safetensors", metadata(), fp16=True)
    sd = load_file(path)
    assert all(k.startswith(("lora_unet_", "lora_te_text_model_encoder_layers_")) for k in sd)
    stem = "lora_unet_down_blocks_0_attentions_0_"
    assert sd[f"{stem}proj_in.lora_down.weight"].shape == (RANK, 32, 1, 1)  # 1x1 conv: 4-D like kohya
    assert sd[f"{stem}proj_in.lora_up.weight"].shape == (32, RANK, 1, 1)
    assert sd[f"{stem}transformer_blocks_0_attn1_to_out_0.lora_down.weight"].shape == (RANK, 32)
    assert f"{stem}transformer_blocks_0_ff_net_0_proj.alpha" in sd
    alpha = sd["lora_te_text_model_encoder_layers_1_mlp_fc2.alpha"]
    assert alpha.ndim == 0 and alpha.dtype == torch.float16 and alpha.item() == ALPHA
    assert {v.dtype for v in sd.values()} == {torch.float16}
    names = {k.split(".")[0] for k in sd}
    assert len(sd) == 3 * len(names)  # down, up, alpha for every module


def test_metadata_strings_hashes_and_no_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_secret, cfg_secret = "hf_ENVSECRET0123456789", "hf_CFGSECRET0123456789"
    monkeypatch.setenv("HF_TOKEN", env_secret)
    run = OmegaConf.to_container(OmegaConf.structured(SdftConfig), enum_to_str=True)
    run["model"].update(hf_token=cfg_secret, revision="${oc.env:HF_TOKEN}")  # a secret under an innocent name too
    run["logger"]["wandb_api_key"] = cfg_secret
    meta = metadata(
        steps=30,
        epoch=2,
        resolution=64,
        training_comment="sks person",
        tag_frequencies={"instance": tag_frequency(["photo of sks person, smiling", "sks person"])},
        config=OmegaConf.create(run),
    )
    pipe = lora_pipe("lora_attn")
    path = save_kohya_lora(pipe.unet, pipe.text_encoder, tmp_path / "k.safetensors", meta)
    raw = path.read_bytes()
    assert env_secret.encode() not in raw and cfg_secret.encode() not in raw
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    assert all(isinstance(v, str) for v in header.values())
    expected = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": "4",
        "ss_network_alpha": "2.0",
        "ss_base_model_version": "sd_v1",
        "ss_sd_model_name": "tiny",
        "ss_steps": "30",
        "ss_epoch": "2",
        "ss_resolution": "(64, 64)",
        "ss_training_comment": "sks person",
    }
    assert {k: header[k] for k in expected} == expected
    tags = {"photo of sks person": 1, "smiling": 1, "sks person": 1}
    assert json.loads(header["ss_tag_frequency"]) == {"instance": tags}
    config = json.loads(header["sdft_config"])
    assert "hf_token" not in config["model"] and "wandb_api_key" not in config["logger"]
    assert config["model"]["revision"] == "<redacted>" and config["adapter"]["rank"] == 4
    # kohya's sshs_model_hash: sha256 of the bytes after the header (the tensors); legacy: 8 hex digits
    n = int.from_bytes(raw[:8], "little")
    assert header["sshs_model_hash"] == hashlib.sha256(raw[8 + n :]).hexdigest()
    assert len(header["sshs_legacy_hash"]) == 8


def _write(tmp_path: Path, sd: dict[str, torch.Tensor], name: str = "x.safetensors") -> Path:
    save_file({k: v.clone().contiguous() for k, v in sd.items()}, tmp_path / name)
    return tmp_path / name


def test_sdxl_file_is_refused_with_its_keys(tmp_path: Path) -> None:
    down, up = torch.zeros(4, 32), torch.zeros(32, 4)
    sd = {}
    for stem in (
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj",
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
    ):
        sd |= {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up, f"{stem}.alpha": torch.tensor(4.0)}
    path = _write(tmp_path, sd)
    pipe = fresh_pipe()
    with pytest.raises(LoraFormatError) as err:
        load_kohya_lora(path, pipe.unet, pipe.text_encoder)
    msg = str(err.value)
    assert isinstance(err.value, SdftError) and "SDXL" in msg and "9 problem(s)" in msg
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in msg
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight: no such layer" in msg
    with pytest.raises(LoraFormatError, match="SDXL"):
        load_kohya_lora(path)  # without models the format check alone catches it


def test_renamed_key_is_named(tmp_path: Path) -> None:
    pipe = lora_pipe("lora_attn")
    sd = load_file(save_kohya_lora(pipe.unet, pipe.text_encoder, tmp_path / "k.safetensors", metadata()))
    good = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"
    typo = good.replace("to_k", "to_kk")
    sd[typo] = sd.pop(good)
    fresh = fresh_pipe()
    with pytest.raises(LoraFormatError) as err:
        load_kohya_lora(_write(tmp_path, sd), fresh.unet, fresh.text_encoder)
    msg = str(err.value)
    assert f"{typo}: no such layer in the unet" in msg
    assert "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k: has lora_B but not its partner" in msg


def test_shape_mismatch_and_unknown_keys(tmp_path: Path) -> None:
    pipe = fresh_pipe()
    stem = "lora_unet_down_blocks_2_attentions_0_transformer_blocks_0_attn1_to_q"
    wrong = {f"{stem}.lora_down.weight": torch.zeros(4, 320), f"{stem}.lora_up.weight": torch.zeros(320, 4)}
    with pytest.raises(LoraFormatError, match=r"down \(4, 320\) / up \(320, 4\) do not fit the layer"):
        check_lora_fits(wrong, pipe.unet, pipe.text_encoder)
    with pytest.raises(LoraFormatError, match="hada_w1_a"):  # LoHa (LyCORIS) is not LoRA
        check_lora_fits({f"{stem}.hada_w1_a": torch.zeros(4, 4)}, pipe.unet, pipe.text_encoder)
    with pytest.raises(LoraFormatError, match="model.diffusion_model.x"):
        check_lora_fits({"model.diffusion_model.x": torch.zeros(1)}, pipe.unet, pipe.text_encoder)
    with pytest.raises(LoraFormatError, match="no tensors"):
        check_lora_fits({}, pipe.unet, pipe.text_encoder)


def test_no_kohya_equivalent_is_an_error() -> None:
    with pytest.raises(LoraFormatError, match="lora_magnitude_vector"):
        to_kohya({"a.to_q.lora_magnitude_vector": torch.ones(4)}, None, 4.0, 4.0)
    pipe = fresh_pipe()
    with pytest.raises(LoraFormatError, match="neither"):
        save_kohya_lora(pipe.unet, pipe.text_encoder, "/nonexistent/never.safetensors", {})
