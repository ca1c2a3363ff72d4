"""Every LoRA-targetable layer of the real SD 2.1 (768-v) U-Net and text tower (sdft/families/sd2_arch.py, meta device):
the kohya name sdft writes for it lands on that very layer in A1111 and ComfyUI.

The clients' rules are the ones tests/test_sdxl_client_keys.py re-implements (A1111 v1.10.1 networks.py
`convert_diffusers_name_to_compvis` + `load_network`'s lookup and `re_x_proj` retry; ComfyUI comfy/lora.py
`model_lora_keys_unet` through comfy/utils.py `unet_to_diffusers`), plus their SD 2 text-tower rules written here:
- A1111: `lora_te_text_model_encoder_layers_N_*` goes to the OpenCLIP module `model_transformer_resblocks_N_*` (mlp_fc1
  -> mlp_c_fc, mlp_fc2 -> mlp_c_proj, self_attn -> attn) when `network_layer_mapping` holds
  `model_transformer_resblocks` (is_sd2); q/k/v then reach the fused `attn` (nn.MultiheadAttention) by the re_x_proj
  retry, out_proj its own `attn_out_proj`.
- ComfyUI comfy/lora.py `model_lora_keys_clip`: for its SD 2 tower (`clip_h`, HF CLIP layout), `lora_te_text_model_
  encoder_layers_N_<LORA_CLIP_MAP name>` -> `clip_h.transformer.text_model.encoder.layers.N.<diffusers name>.weight`.
The original-layout layer each must reach is sdft's single-file mapping (sdft/models/original_layout.py; its SD 2 round
trip through diffusers' converter is tests/test_sd2.py's).
"""

from __future__ import annotations

import re

import pytest
from torch import nn

from sdft.adapters.kohya import kohya_name
from sdft.families import get_family
from sdft.families.sd2_arch import build_sd21_text_encoder, build_sd21_unet
from sdft.models.original_layout import open_clip_to_original, unet_to_original
from test_sdxl_client_keys import RE_X_PROJ, a1111_lookup, comfy_key_map, comfy_unet_config, comfy_unet_to_diffusers

LORA_CLIP_MAP = {
    "mlp.fc1": "mlp_fc1",
    "mlp.fc2": "mlp_fc2",
    "self_attn.k_proj": "self_attn_k_proj",
    "self_attn.q_proj": "self_attn_q_proj",
    "self_attn.v_proj": "self_attn_v_proj",
    "self_attn.out_proj": "self_attn_out_proj",
}


def a1111_sd2_text(stem: str) -> str:
    """networks.py convert_diffusers_name_to_compvis, its `lora_te_` branch with is_sd2."""
    m = re.match(r"lora_te_text_model_encoder_layers_(\d+)_(.+)", stem)
    assert m, stem
    n, rest = m.groups()
    if "mlp_fc1" in rest:
        return f"model_transformer_resblocks_{n}_{rest.replace('mlp_fc1', 'mlp_c_fc')}"
    if "mlp_fc2" in rest:
        return f"model_transformer_resblocks_{n}_{rest.replace('mlp_fc2', 'mlp_c_proj')}"
    return f"model_transformer_resblocks_{n}_{rest.replace('self_attn', 'attn')}"


def a1111_sd2_text_lookup(stem: str, mapping: set[str]) -> str | None:
    key = a1111_sd2_text(stem)
    if key in mapping:
        return key
    m = RE_X_PROJ.match(key)
    return m.group(1) if m and m.group(1) in mapping else None


@pytest.fixture(scope="module")
def real_unet():
    return build_sd21_unet(device="meta")


@pytest.fixture(scope="module")
def real_text_encoder():
    return build_sd21_text_encoder(device="meta")


def test_sd2_files_use_kohya_sd1_naming_of_the_diffusers_modules(real_unet):
    family = get_family("sd2")
    layers = [n for n, m in real_unet.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert family.kohya_names("unet", layers) == {n: kohya_name(n, False) for n in layers}
    assert family.kohya_metadata({"prediction_type": "v_prediction"})["ss_v2"] == "True"


def test_every_sd21_unet_layer_lands_on_its_own_layer_in_a1111_and_comfyui(real_unet):
    layers = [n for n, m in real_unet.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(layers) > 250
    assert real_unet.config.use_linear_projection  # proj_in / proj_out are Linear layers in SD 2
    weights = [k for k in real_unet.state_dict()]
    original = unet_to_original({k: k for k in weights}, real_unet.config)  # original key -> diffusers key
    ldm = {v: k for k, v in original.items()}
    comfy = comfy_unet_to_diffusers(comfy_unet_config(real_unet.config))
    assert {k: comfy[k] for k in weights} == ldm  # ComfyUI's map and sdft's single-file map agree on SD 2.1
    mapping = set()
    for key in ldm.values():
        parts = ("diffusion_model." + key).split(".")[:-1]
        mapping |= {"_".join(parts[:i]) for i in range(1, len(parts) + 1)}
    key_map = comfy_key_map({"diffusion_model." + v for v in ldm.values()}, {k: comfy[k] for k in weights})
    family = get_family("sd2")
    names = family.kohya_names("unet", layers, real_unet.config)
    for name in layers:
        target = ldm[name + ".weight"].removesuffix(".weight")
        stem = names[name]
        assert a1111_lookup(stem, mapping) == "diffusion_model_" + target.replace(".", "_"), name
        assert key_map.get(stem) == f"diffusion_model.{target}.weight", name


def test_every_sd21_text_layer_lands_on_its_own_layer_in_a1111_and_comfyui(real_text_encoder):
    te = real_text_encoder
    layers = [n for n, m in te.named_modules() if isinstance(m, nn.Linear)]
    assert len(layers) == 23 * 6
    original = open_clip_to_original(dict(te.state_dict()))  # OpenCLIP keys the single file holds
    # A1111: every module of the OpenCLIP tower (network_layer_mapping), the fused `attn` holding q/k/v among them
    mapping = {"model_" + k.rsplit(".", 1)[0].replace(".", "_") for k in original}
    comfy = {}
    for n in range(te.config.num_hidden_layers):
        for diffusers, lora in LORA_CLIP_MAP.items():
            comfy[f"lora_te_text_model_encoder_layers_{n}_{lora}"] = (
                f"clip_h.transformer.text_model.encoder.layers.{n}.{diffusers}.weight"
            )
    names = get_family("sd2").kohya_names("text_encoder", layers)
    for name in layers:
        stem = names[name]
        n, rest = re.match(r"(?:text_model\.)?encoder\.layers\.(\d+)\.(.+)", name).groups()
        fused = rest in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
        own = f"transformer.resblocks.{n}." + ("attn" if fused else {"self_attn.out_proj": "attn.out_proj",
              "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}[rest])  # fmt: skip
        assert (own + (".in_proj_weight" if fused else ".weight")) in original, name
        assert a1111_sd2_text_lookup(stem, mapping) == "model_" + own.replace(".", "_"), name
        assert comfy.get(stem) == f"clip_h.transformer.text_model.encoder.layers.{n}.{rest}.weight", name
