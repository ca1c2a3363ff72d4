"""Write a diffusers SD 1.x or SDXL pipeline as one original-layout (A1111 / civitai / ComfyUI) `.safetensors` file.

diffusers ships only the original -> diffusers direction (`diffusers.loaders.single_file_utils`:
convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint, convert_open_clip_checkpoint);
this module is its inverse. The block numbering is derived from each model's config (number of blocks,
layers_per_block, which up blocks have attentions), so it holds for SD 1.5, SDXL and the tiny test models alike.
Every key must map: nothing is dropped. A LoRA injected with peft is merged into the written weights (peft's own
`get_delta_weight` does the maths).

Per family only the text side differs (each family's `original_text_parts`; the whole file: sdft/families/single_file.py): SD 1.x has one CLIP under `cond_stage_model.`; SDXL has
CLIP-L under `conditioner.embedders.0.transformer.` and OpenCLIP bigG under `conditioner.embedders.1.model.` (fused
q/k/v `in_proj`, `text_projection` stored transposed), and its U-Net's `add_embedding` is the original `label_emb`.

Load the file back with `StableDiffusionPipeline.from_single_file(path, config=<diffusers folder>)` (SDXL:
`StableDiffusionXLPipeline`).
"""

from __future__ import annotations


import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from sdft.errors import SdftError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer.text_model."
SDXL_TEXT_ENCODER_PREFIX = "conditioner.embedders.0.transformer.text_model."  # CLIP ViT-L
SDXL_TEXT_ENCODER_2_PREFIX = "conditioner.embedders.1.model."  # OpenCLIP ViT-bigG

# Inner renames inside one block (diffusers name -> original name)
UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
# OpenCLIP text tower: whole keys outside the transformer, and inner renames of one residual block
OPEN_CLIP_KEYS = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}
OPEN_CLIP_BLOCK = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}

Rule = tuple[str, dict[str, str]]  # (original module prefix, inner renames)


class SingleFileError(SdftError, ValueError):
    """A model cannot be written in the original single-file layout."""


def _layers_per_block(config) -> int:
    lpb = config.layers_per_block
    if isinstance(lpb, (list, tuple)):
        if len(set(lpb)) != 1:
            raise SingleFileError(f"layers_per_block={lpb} differs per block; the original SD layout cannot hold it.")
        lpb = lpb[0]
    return int(lpb)


def unet_rules(config) -> dict[str, Rule]:
    """Diffusers U-Net module prefix -> (original prefix, inner renames), for an SD 1.x-style U-Net config."""
    n, per = len(config.down_block_types), _layers_per_block(config)
    rules: dict[str, Rule] = {
        "conv_in": ("input_blocks.0.0", {}),
        "time_embedding.linear_1": ("time_embed.0", {}),
        "time_embedding.linear_2": ("time_embed.2", {}),
        "conv_norm_out": ("out.0", {}),
        "conv_out": ("out.2", {}),
        "mid_block.resnets.0": ("middle_block.0", UNET_RESNET),
        "mid_block.attentions.0": ("middle_block.1", {}),
        "mid_block.resnets.1": ("middle_block.2", UNET_RESNET),
    }
    for b in range(n):
        for j in range(per):
            i = 1 + b * (per + 1) + j
            rules[f"down_blocks.{b}.resnets.{j}"] = (f"input_blocks.{i}.0", UNET_RESNET)
            rules[f"down_blocks.{b}.attentions.{j}"] = (f"input_blocks.{i}.1", {})
        rules[f"down_blocks.{b}.downsamplers.0.conv"] = (f"input_blocks.{1 + b * (per + 1) + per}.0.op", {})
    for b, block_type in enumerate(config.up_block_types):
        for j in range(per + 1):
            i = b * (per + 1) + j
            rules[f"up_blocks.{b}.resnets.{j}"] = (f"output_blocks.{i}.0", UNET_RESNET)
            rules[f"up_blocks.{b}.attentions.{j}"] = (f"output_blocks.{i}.1", {})
        slot = 2 if "CrossAttn" in block_type else 1  # the upsampler follows the attention when there is one
        rules[f"up_blocks.{b}.upsamplers.0.conv"] = (f"output_blocks.{b * (per + 1) + per}.{slot}.conv", {})
    if getattr(config, "addition_embed_type", None) == "text_time":  # SDXL's size/crop + pooled text embedding
        rules["add_embedding.linear_1"] = ("label_emb.0.0", {})
        rules["add_embedding.linear_2"] = ("label_emb.0.2", {})
    return rules


def vae_rules(config) -> dict[str, Rule]:
    """Diffusers AutoencoderKL module prefix -> (original prefix, inner renames)."""
    n, per = len(config.down_block_types), int(config.layers_per_block)
    rules: dict[str, Rule] = {"quant_conv": ("quant_conv", {}), "post_quant_conv": ("post_quant_conv", {})}
    for part in ("encoder", "decoder"):
        rules[f"{part}.conv_in"] = (f"{part}.conv_in", {})
        rules[f"{part}.conv_out"] = (f"{part}.conv_out", {})
        rules[f"{part}.conv_norm_out"] = (f"{part}.norm_out", {})
        rules[f"{part}.mid_block.attentions.0"] = (f"{part}.mid.attn_1", VAE_ATTENTION)
        for k in range(2):
            rules[f"{part}.mid_block.resnets.{k}"] = (f"{part}.mid.block_{k + 1}", VAE_RESNET)
    for i in range(n):
        up = n - 1 - i  # the original decoder numbers its up blocks from the bottom
        rules[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = (f"encoder.down.{i}.downsample.conv", {})
        rules[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = (f"decoder.up.{up}.upsample.conv", {})
        for j in range(per):
            rules[f"encoder.down_blocks.{i}.resnets.{j}"] = (f"encoder.down.{i}.block.{j}", VAE_RESNET)
        for j in range(per + 1):
            rules[f"decoder.up_blocks.{i}.resnets.{j}"] = (f"decoder.up.{up}.block.{j}", VAE_RESNET)
    return rules


def _rename(state_dict: dict[str, torch.Tensor], rules: dict[str, Rule], what: str) -> dict[str, torch.Tensor]:
    """Apply prefix rules to every key; unmapped keys are an error, never silently dropped."""
    out, unmapped = {}, []
    for key, value in state_dict.items():
        parts = key.split(".")
        for cut in range(len(parts) - 1, 0, -1):  # longest matching module prefix wins
            rule = rules.get(".".join(parts[:cut]))
            if rule is not None:
                prefix, inner = rule
                rest = ".".join(parts[cut:])
                module, _, param = rest.rpartition(".")
                out[f"{prefix}.{inner.get(module, module) + '.' if module else ''}{param}"] = value
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise SingleFileError(f"{what}: {len(unmapped)} key(s) have no original-layout name: {unmapped[:10]}")
    return out


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with any peft LoRA merged in and its own keys restored (no base_layer/lora_*)."""
    state = {k: v for k, v in model.state_dict().items() if ".lora_" not in k}
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            key = f"{name}.base_layer.weight"
            base = state.pop(key)
            weight = base.float()
            if not (module.merged or module.disable_adapters):
                for adapter in module.active_adapters:
                    if adapter in getattr(module, "lora_A", {}):
                        weight = weight + module.get_delta_weight(adapter).float()
            state[f"{name}.weight"] = weight.to(base.dtype)
    return {k.replace(".base_layer.", "."): v for k, v in state.items()}


def unet_to_original(state_dict: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Diffusers U-Net keys -> original keys (without the model.diffusion_model. prefix)."""
    return _rename(state_dict, unet_rules(config), "unet")


def vae_to_original(state_dict: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Diffusers VAE keys -> original keys; mid-block attention weights become 1x1 convs as in the original."""
    out = _rename(state_dict, vae_rules(config), "vae")
    for key, value in out.items():
        if ".mid.attn_1." in key and key.endswith(".weight") and value.ndim == 2:
            out[key] = value[:, :, None, None]
    return out


def text_encoder_to_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP text model keys (transformers 4 `text_model.*` or 5 flat) -> original keys without the prefix."""
    return {k.removeprefix("text_model."): v for k, v in state_dict.items() if not k.endswith("position_ids")}


def open_clip_to_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SDXL's second tower (CLIPTextModelWithProjection) -> OpenCLIP keys without the prefix: q/k/v fused into
    `attn.in_proj_*` (in that order), `text_projection` transposed (OpenCLIP multiplies `x @ text_projection`)."""
    out, fused, unmapped = {}, {}, []
    for key, value in state_dict.items():
        name = key.removeprefix("text_model.")
        if name.endswith("position_ids"):
            continue  # a buffer, not a weight
        if name == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif name in OPEN_CLIP_KEYS:
            out[OPEN_CLIP_KEYS[name]] = value
        elif name.startswith("encoder.layers."):
            layer, rest = name.removeprefix("encoder.layers.").split(".", 1)
            module, _, param = rest.rpartition(".")
            block = f"transformer.resblocks.{layer}."
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                fused.setdefault(f"{block}attn.in_proj_{param}", {})[module.removeprefix("self_attn.")[0]] = value
            elif module in OPEN_CLIP_BLOCK:
                out[f"{block}{OPEN_CLIP_BLOCK[module]}.{param}"] = value
            else:
                unmapped.append(key)
        else:
            unmapped.append(key)
    for key, qkv in fused.items():
        if set(qkv) != {"q", "k", "v"}:
            unmapped.append(f"{key} (only {sorted(qkv)} of q/k/v)")
            continue
        out[key] = torch.cat([qkv["q"], qkv["k"], qkv["v"]])
    if unmapped:
        raise SingleFileError(f"text_encoder_2: {len(unmapped)} key(s) have no original-layout name: {unmapped[:10]}")
    return out
