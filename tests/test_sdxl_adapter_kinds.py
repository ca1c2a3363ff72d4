"""LyCORIS kinds (LoCon, DoRA, LoHa, LoKr) and OFT's `.diff` on SDXL: training writes the kohya/LyCORIS file with SDXL
names; on the REAL SDXL architecture (meta device, named layers materialised) every layer's file tensors, merged with
A1111's / ComfyUI's rules (tests/test_adapter_merge_rules.py), give peft's weight and the names are those the
clients' SDXL key maps build; `sdft generate` loads both files with an SDXL base and renders the merged weights."""

from __future__ import annotations

import re

import pytest
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open
from safetensors.torch import save_file

from helpers.compare import max_diff, render
from sdft.adapters.export import merge_loras
from sdft.adapters.kinds import layer_adapters
from sdft.adapters.lora import setup_trainable
from sdft.adapters.sdxl_files import (
    diffusers_style_name,
    kohya_name,
    save_sdxl_kohya_lora,
    save_sdxl_lora,
    sdxl_kohya_tensors,
)
from sdft.config import AdapterConfig, AdapterKind
from sdft.generation.generator import Generator
from sdft.models.sdxl_tiny import build_sdxl_tiny_pipeline
from test_adapter_merge_rules import _materialise, adapter_cfg, by_module, client_merge, peft_weight, randomise

PARTS = ("unet", "text_encoder", "text_encoder_2")
KINDS = ["lora", "locon", "dora", "loha", "lokr", "oft"]
TOL = 1e-4

# ComfyUI comfy/lora.py model_lora_keys_clip for SDXL (clip_l + clip_g): lora_te1_/lora_te2_text_model_encoder_layers_
# {layer}_{LORA_CLIP_MAP value}; clip_l has 12 layers, clip_g 32. A1111 (networks.py convert_diffusers_name_to_compvis)
# reads the same names: te1 -> `0_transformer_text_model_...`, te2 -> `1_model_transformer_resblocks_<n>_...`.
CLIP_LAYER = re.compile(
    r"lora_te(?P<tower>[12])_text_model_encoder_layers_(?P<n>\d+)_(mlp_fc[12]|self_attn_[qkv]_proj|self_attn_out_proj)"
)
REAL_UNET = [
    "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q",
    "down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k",  # cross-attention 2048 -> 1280
    "mid_block.attentions.0.transformer_blocks.9.ff.net.2",
    "up_blocks.0.attentions.2.proj_out",
    "down_blocks.0.resnets.1.conv1",  # 3x3, 320 -> 320
    "up_blocks.1.resnets.0.conv_shortcut",  # 1x1, 1920 -> 640
    "up_blocks.1.upsamplers.0.conv",
    "up_blocks.0.upsamplers.0.conv",  # output_blocks.2.2.conv: A1111 missed it under diffusers-style names
]
REAL_TE = {
    "text_encoder": [
        "encoder.layers.11.self_attn.q_proj",
        "encoder.layers.0.mlp.fc1",
    ],  # transformers 5: no text_model.
    "text_encoder_2": ["text_model.encoder.layers.31.mlp.fc2", "text_model.encoder.layers.5.self_attn.out_proj"],
}


def cfg_for(kind: str, **extra) -> AdapterConfig:
    if kind == "oft":  # OFT: no 3x3 convs (kinds.py refuses them); block 8 divides every width here
        return AdapterConfig(
            kind=AdapterKind.oft, oft_block_size=8, unet_targets=["attn1", "attn2", "ff", "proj"], **extra
        )
    return adapter_cfg(kind, **extra)


def adapted_layers(model) -> dict[str, BaseTunerLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, BaseTunerLayer) and "default" in layer_adapters(m)}


@pytest.mark.parametrize("kind", KINDS)
def test_real_sdxl_names_and_client_merges(kind):
    from sdft.models.sdxl_arch import build_sdxl_text_encoders, build_sdxl_unet

    te1, te2 = build_sdxl_text_encoders(device="meta")
    real = {"unet": build_sdxl_unet(device="meta"), "text_encoder": te1, "text_encoder_2": te2}
    real_names = {part: {n for n, _ in model.named_modules()} for part, model in real.items()}
    names = {"unet": REAL_UNET, **REAL_TE}
    models = {part: _materialise(model, names[part]) for part, model in real.items()}
    setup_trainable(models["unet"], models["text_encoder"], cfg_for(kind), models["text_encoder_2"])
    for seed, model in enumerate(models.values()):
        randomise(model, seed)
    files = by_module(sdxl_kohya_tensors(models))
    clients = ("comfyui",) if kind == "dora" else ("a1111", "comfyui")  # A1111's DoRA: docs/formats.md
    checked = 0
    for part, model in models.items():
        layers = adapted_layers(model)
        assert layers and set(layers) <= set(names[part])
        for name, layer in layers.items():
            stem = kohya_name(part, name, real["unet"].config)
            if part == "unet":  # kohya's SDXL names (original layout): tests/test_sdxl_client_keys.py, every layer
                assert stem == "lora_unet_" + SGM[name].replace(".", "_") and name in real_names["unet"]
            else:
                match = CLIP_LAYER.fullmatch(stem)
                assert match and match["tower"] == ("1" if part == "text_encoder" else "2"), stem
                assert int(match["n"]) < (12 if part == "text_encoder" else 32)
            weight = layer.get_base_layer().weight.detach().float()
            if kind == "oft":
                assert set(files[stem]) == {"diff"}
            for client in clients:
                merged = client_merge(client, weight, files[stem])
                assert (merged - peft_weight(layer)).abs().max() <= 1e-5, (client, part, name)
            checked += 1
    assert len(files) == checked
    conv = files.get(kohya_name("unet", "down_blocks.0.resnets.1.conv1", real["unet"].config))
    assert (conv is not None) == (kind not in ("dora", "oft"))  # 3x3 convs (LoHa/LoKr write them flattened)
    if kind == "locon":
        assert conv["lora_down.weight"].dim() == 4


def randomised_sdxl(kind: str):
    """The tiny SDXL with a random adapter of `kind` on the U-Net and both towers."""
    pipe = build_sdxl_tiny_pipeline()
    extra = {"conv_rank": 2, "conv_alpha": 3.0} if kind in ("locon", "loha", "lokr") else {}
    cfg = cfg_for(kind, train_text_encoder=True)
    if kind in ("locon", "loha", "lokr"):
        cfg.unet_targets = ["attn1", "attn2", "ff", "conv"]
    cfg.conv_rank, cfg.conv_alpha = extra.get("conv_rank"), extra.get("conv_alpha")
    setup_trainable(pipe.unet, pipe.text_encoder, cfg, pipe.text_encoder_2)
    for seed, model in enumerate((pipe.unet, pipe.text_encoder, pipe.text_encoder_2)):
        randomise(model, seed)
    return pipe


@pytest.mark.parametrize("kind", ["locon", "loha", "lokr", "dora", "oft"])
def test_sdxl_generator_loads_every_kind_and_renders_the_merged_weights(kind, tmp_path):
    pipe = randomised_sdxl(kind)
    want = render(pipe)
    base = render(build_sdxl_tiny_pipeline())
    assert max_diff(want, base) > 1e-3  # the adapter changes the image
    models = (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
    files = {"sdft": save_sdxl_lora(*models, tmp_path / "pytorch_lora_weights.safetensors")}
    if kind != "oft":  # OFT's kohya `.diff` file is for A1111/ComfyUI; sdft reads the sdft file
        files["kohya"] = save_sdxl_kohya_lora(*models, tmp_path / f"{kind}.safetensors", {})
        with safe_open(str(files["kohya"]), framework="pt") as f:
            assert f.metadata()["ss_base_model_version"] == "sdxl_base_v1-0"
            assert {k.split("_text_model")[0] for k in f.keys() if k.startswith("lora_te")} == {"lora_te1", "lora_te2"}
            unet_keys = [k for k in f.keys() if k.startswith("lora_unet_")]
            state, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
        assert unet_keys and all(
            k.startswith(("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_"))
            for k in unet_keys
        )
        old = {
            kohya_name("unet", n, pipe.unet.config): diffusers_style_name("unet", n) for n in adapted_layers(pipe.unet)
        }
        renamed = {
            (old[k.partition(".")[0]] + "." + k.partition(".")[2]) if k in unet_keys else k: v for k, v in state.items()
        }
        assert len(renamed) == len(state) and any(k.startswith("lora_unet_up_blocks_0_") for k in renamed)
        files["kohya, diffusers-style U-Net names (sdft before)"] = tmp_path / f"old_{kind}.safetensors"
        save_file(renamed, str(files["kohya, diffusers-style U-Net names (sdft before)"]), metadata=meta)
    for layer in (m for model in models for m in adapted_layers(model).values()):
        layer.merge(adapter_names=["default"])  # the merged weights render what the adapter's forward did
    assert max_diff(render(pipe), want) <= TOL
    for fmt, path in files.items():
        gen = Generator("sdxl_tiny", cache_dir=str(tmp_path / "cache"), device="cpu")
        lora = gen.load_lora(path)
        assert set(lora.parts) == set(PARTS), fmt
        gen.set_loras([str(path)])
        assert max_diff(render(gen.pipe), want) <= TOL, fmt
        if kind not in (
            "dora",
            "oft",
        ):  # weight 0: the base (DoRA's magnitudes rescale W at scale 0; OFT has no weight)
            gen.set_loras([f"{path}:0"])
            assert max_diff(render(gen.pipe), base) <= TOL, fmt
        merged = build_sdxl_tiny_pipeline()  # `sdft export`'s merge: fused into U-Net and both towers
        merge_loras(merged, [(path, 1.0)])
        assert not any(n for n, _ in merged.text_encoder_2.named_parameters() if "lora" in n or "hada" in n), fmt
        assert max_diff(render(merged), want) <= TOL, (fmt, "export merge")


def test_an_sd1_loha_file_is_refused_by_an_sdxl_base(tiny_pipe_factory, tmp_path):
    from sdft.adapters.kohya import LoraFormatError, save_kohya_lora

    pipe = tiny_pipe_factory()
    setup_trainable(pipe.unet, pipe.text_encoder, adapter_cfg("loha", train_text_encoder=True))
    randomise(pipe.unet)
    path = save_kohya_lora(pipe.unet, pipe.text_encoder, tmp_path / "sd1_loha.safetensors", {})
    gen = Generator("sdxl_tiny", cache_dir=str(tmp_path / "cache"), device="cpu")
    with pytest.raises(LoraFormatError, match="fit no layer of these SDXL"):
        gen.load_lora(path)
    assert gen.loaded_loras == []


def test_two_step_loha_run_on_sdxl_writes_a_lycoris_file_the_generator_renders(fast_config, tmp_path):
    import json

    from sdft.families import module_pipeline
    from sdft.run.train import fit
    from helpers.wiring import prepare_for_test

    parts = prepare_for_test(
        fast_config(
            "model=sdxl_tiny",
            "adapter=loha",
            "adapter.train_text_encoder=true",
            "trainer.max_steps=2",
            "optim.lr=1e-2",
            f"model.cache_dir={tmp_path / 'cache'}",
        )
    )
    fit(parts)
    kohya = parts.checkpoint.final_kohya_path
    with safe_open(str(kohya), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["ss_network_module"] == "lycoris.kohya"
    assert json.loads(meta["ss_network_args"])["algo"] == "loha"
    assert {k.split("_")[1] for k in keys} == {"unet", "te1", "te2"}
    assert all(k.endswith((".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".alpha")) for k in keys)
    pipe = parts.pipe
    want = render(module_pipeline(parts.module.eval(), pipe.tokenizer, pipe.tokenizer_2, pipe.scheduler))
    gen = Generator("sdxl_tiny", cache_dir=str(tmp_path / "cache"), device="cpu")
    gen.set_loras([str(kohya)])
    assert max_diff(render(gen.pipe), want) <= TOL


# SDXL's original (sgm) U-Net layout: input_blocks 1-2 resnets (320), 3 downsample (op), 4-5 resnet + transformer
# (640, depth 2), 6 downsample, 7-8 resnet + transformer (1280, depth 10); middle_block 0 / 2 resnets, 1 transformer;
# output_blocks 0-2 resnet + transformer (1280), upsample at 2.2; 3-5 (640), upsample at 5.2; 6-8 resnets only.
SGM = {
    "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q": "input_blocks.4.1.transformer_blocks.1.attn1.to_q",
    "down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k": "input_blocks.8.1.transformer_blocks.9.attn2.to_k",
    "mid_block.attentions.0.transformer_blocks.9.ff.net.2": "middle_block.1.transformer_blocks.9.ff.net.2",
    "mid_block.resnets.1.conv2": "middle_block.2.out_layers.3",
    "up_blocks.0.attentions.2.proj_out": "output_blocks.2.1.proj_out",
    "down_blocks.0.resnets.1.conv1": "input_blocks.2.0.in_layers.2",
    "up_blocks.1.resnets.0.conv_shortcut": "output_blocks.3.0.skip_connection",
    "down_blocks.1.downsamplers.0.conv": "input_blocks.6.0.op",
    "up_blocks.1.upsamplers.0.conv": "output_blocks.5.2.conv",
    "up_blocks.0.upsamplers.0.conv": "output_blocks.2.2.conv",
}


def test_unet_kohya_names_are_the_original_layout():
    """A hand-written table (the layout above): every client's rule for these is checked on every layer in
    tests/test_sdxl_client_keys.py."""
    from types import SimpleNamespace

    from sdft.models.sdxl_arch import SDXL_UNET_CONFIG

    cfg = SimpleNamespace(**SDXL_UNET_CONFIG)  # the fields the block numbering reads
    for name, sgm in SGM.items():
        assert kohya_name("unet", name, cfg) == "lora_unet_" + sgm.replace(".", "_")
