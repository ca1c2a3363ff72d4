"""Every U-Net layer of the real SDXL base (sdft/models/sdxl_arch.py, meta device): the kohya name sdft writes for it
lands on that very layer in A1111, ComfyUI and diffusers.

The clients' key rules, re-implemented from their code (no client is installed here; written from the sources
named, as tests/test_adapter_merge_rules.py does for the merge maths):
- A1111 v1.10.1 extensions-builtin/Lora/networks.py: `convert_diffusers_name_to_compvis` (its U-Net rules are
  SD 1.x's block numbering), then `load_network`'s lookup in `network_layer_mapping` (every module of the sgm U-Net,
  `diffusion_model_<path with _>`), the `re_x_proj` retry, and the "SDXL loras seem to already have correct compvis
  keys" fallback `lora_unet` -> `diffusion_model`. A key that finds nothing goes to `keys_failed_to_match`.
- ComfyUI comfy/lora.py `model_lora_keys_unet`: `lora_unet_<sgm weight key, dots as _>` for every weight of its own
  (sgm-layout) U-Net, plus `lora_unet_<diffusers key>` through comfy/utils.py `unet_to_diffusers(unet_config)`.
  The unet_config values ComfyUI's model detection reads off an SDXL checkpoint are derived from the diffusers config.
- diffusers: its own code (`StableDiffusionXLPipeline.lora_state_dict` with the U-Net config, which maps kohya's
  `input_blocks`/`middle_block`/`output_blocks` names), through sdft's `sdxl_peft_state`.
The expected original-layout layer of each diffusers layer is ComfyUI's `unet_to_diffusers` map; it is checked to equal
sdft's single-file mapping (sdft/models/original_layout.py, itself checked against diffusers' converters in
tests/test_sdxl_single_file.py).
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from sdft.adapters.sdxl_files import diffusers_style_name, kohya_names

# ------------------------------------------------------------------------------------------------------ A1111

A1111_RESNET = {
    "conv1": "in_layers_2",
    "conv2": "out_layers_3",
    "norm1": "in_layers_0",
    "norm2": "out_layers_0",
    "time_emb_proj": "emb_layers_1",
    "conv_shortcut": "skip_connection",
}
RE_X_PROJ = re.compile(r"(.*)_([qkv]_proj)$")


def a1111_convert(key: str, is_sd2: bool = False) -> str:
    """networks.py convert_diffusers_name_to_compvis (v1.10.1)."""

    def match(pattern):
        m = re.match(pattern, key)
        return [int(x) if re.match(r"\d+", x) else x for x in m.groups()] if m else None

    if m := match(r"lora_unet_conv_in(.*)"):
        return f"diffusion_model_input_blocks_0_0{m[0]}"
    if m := match(r"lora_unet_conv_out(.*)"):
        return f"diffusion_model_out_2{m[0]}"
    if m := match(r"lora_unet_time_embedding_linear_(\d+)(.*)"):
        return f"diffusion_model_time_embed_{m[0] * 2 - 2}{m[1]}"
    if m := match(r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)"):
        suffix = A1111_RESNET.get(m[3], m[3]) if m[1] == "resnets" else m[3]
        return f"diffusion_model_input_blocks_{1 + m[0] * 3 + m[2]}_{1 if m[1] == 'attentions' else 0}_{suffix}"
    if m := match(r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)"):
        suffix = A1111_RESNET.get(m[2], m[2]) if m[0] == "resnets" else m[2]
        return f"diffusion_model_middle_block_{1 if m[0] == 'attentions' else m[1] * 2}_{suffix}"
    if m := match(r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)"):
        suffix = A1111_RESNET.get(m[3], m[3]) if m[1] == "resnets" else m[3]
        return f"diffusion_model_output_blocks_{m[0] * 3 + m[2]}_{1 if m[1] == 'attentions' else 0}_{suffix}"
    if m := match(r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv"):
        return f"diffusion_model_input_blocks_{3 + m[0] * 3}_0_op"
    if m := match(r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv"):
        return f"diffusion_model_output_blocks_{2 + m[0] * 3}_{2 if m[0] > 0 else 1}_conv"
    if m := match(r"lora_te_text_model_encoder_layers_(\d+)_(.+)"):
        return f"transformer_text_model_encoder_layers_{m[0]}_{m[1]}"
    if m := match(r"lora_te2_text_model_encoder_layers_(\d+)_(.+)"):
        if "mlp_fc1" in m[1]:
            return f"1_model_transformer_resblocks_{m[0]}_{m[1].replace('mlp_fc1', 'mlp_c_fc')}"
        if "mlp_fc2" in m[1]:
            return f"1_model_transformer_resblocks_{m[0]}_{m[1].replace('mlp_fc2', 'mlp_c_proj')}"
        return f"1_model_transformer_resblocks_{m[0]}_{m[1].replace('self_attn', 'attn')}"
    return key


def a1111_lookup(stem: str, mapping: set[str]) -> str | None:
    """networks.py load_network: the network_layer_mapping name a U-Net key lands on, None = keys_failed_to_match."""
    key = a1111_convert(stem)
    if key in mapping:
        return key
    m = RE_X_PROJ.match(key)
    if m and m.group(1) in mapping:
        return m.group(1)
    if "lora_unet" in stem:
        key = stem.replace("lora_unet", "diffusion_model")
        return key if key in mapping else None
    return None


# ---------------------------------------------------------------------------------------------------- ComfyUI

MAP_ATTENTIONS = {"proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias", "norm.weight", "norm.bias"}
TRANSFORMER_BLOCKS = {
    *(f"norm{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")),
    *(f"attn{i}.to_{x}.weight" for i in (1, 2) for x in ("q", "k", "v")),
    *(f"attn{i}.to_out.0.{p}" for i in (1, 2) for p in ("weight", "bias")),
    *(f"ff.net.{n}.{p}" for n in ("0.proj", "2") for p in ("weight", "bias")),
}
MAP_RESNET = {
    "in_layers.2.weight": "conv1.weight",
    "in_layers.2.bias": "conv1.bias",
    "emb_layers.1.weight": "time_emb_proj.weight",
    "emb_layers.1.bias": "time_emb_proj.bias",
    "out_layers.3.weight": "conv2.weight",
    "out_layers.3.bias": "conv2.bias",
    "skip_connection.weight": "conv_shortcut.weight",
    "skip_connection.bias": "conv_shortcut.bias",
    "in_layers.0.weight": "norm1.weight",
    "in_layers.0.bias": "norm1.bias",
    "out_layers.0.weight": "norm2.weight",
    "out_layers.0.bias": "norm2.bias",
}
MAP_BASIC = {
    ("label_emb.0.0.weight", "class_embedding.linear_1.weight"),
    ("label_emb.0.0.bias", "class_embedding.linear_1.bias"),
    ("label_emb.0.2.weight", "class_embedding.linear_2.weight"),
    ("label_emb.0.2.bias", "class_embedding.linear_2.bias"),
    ("label_emb.0.0.weight", "add_embedding.linear_1.weight"),
    ("label_emb.0.0.bias", "add_embedding.linear_1.bias"),
    ("label_emb.0.2.weight", "add_embedding.linear_2.weight"),
    ("label_emb.0.2.bias", "add_embedding.linear_2.bias"),
    ("input_blocks.0.0.weight", "conv_in.weight"),
    ("input_blocks.0.0.bias", "conv_in.bias"),
    ("out.0.weight", "conv_norm_out.weight"),
    ("out.0.bias", "conv_norm_out.bias"),
    ("out.2.weight", "conv_out.weight"),
    ("out.2.bias", "conv_out.bias"),
    ("time_embed.0.weight", "time_embedding.linear_1.weight"),
    ("time_embed.0.bias", "time_embedding.linear_1.bias"),
    ("time_embed.2.weight", "time_embedding.linear_2.weight"),
    ("time_embed.2.bias", "time_embedding.linear_2.bias"),
}


def comfy_unet_config(config) -> dict:
    """ComfyUI's unet_config keys for a diffusers U-Net config (what model_detection reads off the weights)."""
    n, per = len(config.down_block_types), config.layers_per_block
    depth = config.transformer_layers_per_block
    depth = [depth] * n if isinstance(depth, int) else list(depth)
    attn = ["CrossAttn" in t for t in config.down_block_types]
    return {
        "num_res_blocks": [per] * n,
        "channel_mult": list(range(n)),  # only its length is used
        "transformer_depth": [d if a else 0 for d, a in zip(depth, attn) for _ in range(per)],
        "transformer_depth_output": [d if a else 0 for d, a in zip(depth, attn) for _ in range(per + 1)],
        "transformer_depth_middle": depth[-1],
    }


def comfy_unet_to_diffusers(unet_config: dict) -> dict[str, str]:
    """comfy/utils.py unet_to_diffusers: diffusers key -> ComfyUI (sgm layout) key."""
    num_res_blocks = unet_config["num_res_blocks"]
    num_blocks = len(unet_config["channel_mult"])
    transformer_depth = unet_config["transformer_depth"][:]
    transformer_depth_output = unet_config["transformer_depth_output"][:]
    out = {}
    for x in range(num_blocks):
        n = 1 + (num_res_blocks[x] + 1) * x
        for i in range(num_res_blocks[x]):
            for b in MAP_RESNET:
                out[f"down_blocks.{x}.resnets.{i}.{MAP_RESNET[b]}"] = f"input_blocks.{n}.0.{b}"
            num_transformers = transformer_depth.pop(0)
            if num_transformers > 0:
                for b in MAP_ATTENTIONS:
                    out[f"down_blocks.{x}.attentions.{i}.{b}"] = f"input_blocks.{n}.1.{b}"
                for t in range(num_transformers):
                    for b in TRANSFORMER_BLOCKS:
                        out[f"down_blocks.{x}.attentions.{i}.transformer_blocks.{t}.{b}"] = (
                            f"input_blocks.{n}.1.transformer_blocks.{t}.{b}"
                        )
            n += 1
        for k in ("weight", "bias"):
            out[f"down_blocks.{x}.downsamplers.0.conv.{k}"] = f"input_blocks.{n}.0.op.{k}"
    for b in MAP_ATTENTIONS:
        out[f"mid_block.attentions.0.{b}"] = f"middle_block.1.{b}"
    for t in range(unet_config["transformer_depth_middle"]):
        for b in TRANSFORMER_BLOCKS:
            out[f"mid_block.attentions.0.transformer_blocks.{t}.{b}"] = f"middle_block.1.transformer_blocks.{t}.{b}"
    for i, n in enumerate([0, 2]):
        for b in MAP_RESNET:
            out[f"mid_block.resnets.{i}.{MAP_RESNET[b]}"] = f"middle_block.{n}.{b}"
    num_res_blocks = list(reversed(num_res_blocks))
    for x in range(num_blocks):
        n = (num_res_blocks[x] + 1) * x
        length = num_res_blocks[x] + 1
        for i in range(length):
            c = 0
            for b in MAP_RESNET:
                out[f"up_blocks.{x}.resnets.{i}.{MAP_RESNET[b]}"] = f"output_blocks.{n}.0.{b}"
            c += 1
            num_transformers = transformer_depth_output.pop()
            if num_transformers > 0:
                c += 1
                for b in MAP_ATTENTIONS:
                    out[f"up_blocks.{x}.attentions.{i}.{b}"] = f"output_blocks.{n}.1.{b}"
                for t in range(num_transformers):
                    for b in TRANSFORMER_BLOCKS:
                        out[f"up_blocks.{x}.attentions.{i}.transformer_blocks.{t}.{b}"] = (
                            f"output_blocks.{n}.1.transformer_blocks.{t}.{b}"
                        )
            if i == length - 1:
                for k in ("weight", "bias"):
                    out[f"up_blocks.{x}.upsamplers.0.conv.{k}"] = f"output_blocks.{n}.{c}.conv.{k}"
            n += 1
    for sgm, diffusers in MAP_BASIC:
        out[diffusers] = sgm
    return out


def comfy_key_map(model_keys: set[str], diffusers_map: dict[str, str]) -> dict[str, str]:
    """comfy/lora.py model_lora_keys_unet: LoRA name -> the model's weight key."""
    key_map = {}
    for k in sorted(model_keys):  # the model's own state dict: diffusion_model.<sgm key>
        if k.endswith(".weight"):
            key_map["lora_unet_" + k[len("diffusion_model.") : -len(".weight")].replace(".", "_")] = k
    for k, sgm in diffusers_map.items():
        if k.endswith(".weight"):
            key_map["lora_unet_" + k[: -len(".weight")].replace(".", "_")] = "diffusion_model." + sgm
    return key_map


# ------------------------------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def real_unet():
    from sdft.models.sdxl_arch import build_sdxl_unet

    return build_sdxl_unet(device="meta")


@pytest.fixture(scope="module")
def layout(real_unet):
    """(every Linear/Conv2d layer of the real SDXL U-Net, ComfyUI's diffusers -> sgm map over its weights)."""
    layers = [n for n, m in real_unet.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    comfy = comfy_unet_to_diffusers(comfy_unet_config(real_unet.config))
    weights = [k for k in real_unet.state_dict()]
    assert set(weights) <= set(comfy)  # ComfyUI's map knows every weight of the diffusers SDXL U-Net
    return layers, {k: comfy[k] for k in weights}


def test_comfyui_map_equals_sdft_original_layout(real_unet, layout):
    from sdft.models.original_layout import unet_to_original

    _, comfy = layout
    ours = unet_to_original({k: k for k in comfy}, real_unet.config)
    assert {v: k for k, v in ours.items()} == comfy


def test_every_sdxl_unet_layer_lands_on_its_own_layer_in_a1111_and_comfyui(real_unet, layout):
    layers, comfy = layout
    assert len(layers) > 700
    sgm = {
        name: comfy[name + ".weight"].removesuffix(".weight") for name in layers
    }  # the original-layout layer each must reach
    model_keys = {"diffusion_model." + v for v in comfy.values()}
    mapping = set()  # A1111: every module of the sgm U-Net (containers too), as network_layer_mapping holds
    for key in comfy.values():
        parts = ("diffusion_model." + key).split(".")[:-1]
        mapping |= {"_".join(parts[:i]) for i in range(1, len(parts) + 1)}
    key_map = comfy_key_map(model_keys, {k: v for k, v in comfy.items()})
    names = kohya_names("unet", layers, real_unet.config)
    assert set(names) == set(layers) and len(set(names.values())) == len(layers)
    for name in layers:
        stem = names[name]
        assert stem == "lora_unet_" + sgm[name].replace(".", "_")  # kohya's own SDXL naming
        assert a1111_lookup(stem, mapping) == "diffusion_model_" + sgm[name].replace(".", "_"), name
        assert key_map.get(stem) == f"diffusion_model.{sgm[name]}.weight", name
    # the diffusers-style names sdft wrote before: ComfyUI maps them all, A1111 (SD 1.x block rules) misses three
    old = {name: diffusers_style_name("unet", name) for name in layers}
    assert all(key_map.get(old[n]) == f"diffusion_model.{sgm[n]}.weight" for n in layers)
    missed = {n for n in layers if a1111_lookup(old[n], mapping) != "diffusion_model_" + sgm[n].replace(".", "_")}
    assert missed == {"up_blocks.0.upsamplers.0.conv", "add_embedding.linear_1", "add_embedding.linear_2"}


def test_diffusers_maps_every_layer_sdft_can_target(real_unet):
    """diffusers' own SDXL kohya conversion (load_lora_weights' code) maps every name sdft can write (all target
    groups) back to its diffusers layer; sdft never targets the layers outside the blocks (conv_in, time and add
    embeddings, conv_out), whose original-layout names diffusers' converter refuses."""
    from sdft.adapters.targets import UNET_TARGETS, resolve_targets
    from sdft.adapters.sdxl_check import sdxl_peft_state

    targets = resolve_targets(real_unet, list(UNET_TARGETS), UNET_TARGETS, "unet")
    assert all(t.startswith(("down_blocks.", "mid_block.", "up_blocks.")) for t in targets)
    names = kohya_names("unet", targets, real_unet.config)
    state = {}
    for stem in names.values():
        state[f"{stem}.lora_down.weight"] = torch.zeros(1, 1)
        state[f"{stem}.lora_up.weight"] = torch.zeros(1, 1)
        state[f"{stem}.alpha"] = torch.tensor(1.0)
    converted = sdxl_peft_state(state, real_unet.config)["unet"]
    assert {k.removesuffix(".lora_A.weight") for k in converted if k.endswith(".lora_A.weight")} == set(targets)
