"""LoRA files in the kohya / A1111 / ComfyUI SD 1.x format, and importing LoRA files onto our models.

Key format: `lora_unet_<module path, dots as _>.{lora_down.weight, lora_up.weight, alpha}` and
`lora_te_text_model_<...>` for the CLIP text encoder; scale = alpha / rank. diffusers has no SD1 writer
(`convert_state_dict_to_kohya` is SDXL-flavoured: `lora_te1_`, alpha = rank), so the
mapping is written here. peft's LoRA shapes already equal kohya's (Conv2d: down [r, in, kh, kw], up [out, r, 1, 1]).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import safetensors.torch
import torch
from omegaconf import OmegaConf
from diffusers.utils import convert_state_dict_to_peft, convert_unet_state_dict_to_peft
from peft.tuners.lora import LoraLayer
from peft.utils.other import get_pattern_key
from torch import nn

from sdft.adapters.lora import ADAPTER_NAME, has_lora
from sdft.adapters.hashes import tensors_sha256
from sdft.adapters.lycoris import NoKohyaFormat, layer_tensors, tensor_metadata
from sdft.atomic import atomic_path
from sdft.errors import LoraFormatError
from sdft.families.sd1 import KOHYA_TE_PREFIX, KOHYA_UNET_PREFIX, kohya_name
from sdft.redact import config_json

# kohya's SD 1 / SD 2 naming of the diffusers modules is the family's (sdft/families/sd1.py)
UNET_PREFIX, TE_PREFIX = KOHYA_UNET_PREFIX, KOHYA_TE_PREFIX
PREFIXES = {"unet": UNET_PREFIX, "text_encoder": TE_PREFIX}
SDXL_PREFIXES = ("lora_te1_", "lora_te2_")
PEFT_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<part>[AB])\.weight")
KOHYA_PARTS = {"lora_down.weight": "A", "lora_up.weight": "B"}
# Names whose underscores are part of the module name (diffusers SD U-Net, CLIP text model). Only used to decode
# kohya names when no model is given; with a model the names come from the model itself, as kohya does.
COMPOUND_NAMES = sorted(
    "down_blocks up_blocks mid_block transformer_blocks proj_in proj_out to_q to_k to_v to_out conv_shortcut "
    "time_emb_proj conv_in conv_out conv_norm_out time_embedding linear_1 linear_2 text_model self_attn q_proj "
    "k_proj v_proj out_proj final_layer_norm layer_norm1 layer_norm2 text_projection input_blocks middle_block "
    "output_blocks".split(),
    key=len,
    reverse=True,
)

Alphas = dict[str, float]  # "unet.<module>" / "text_encoder.<module>" -> alpha


def _listing(items: list[str], limit: int = 10) -> str:
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return "\n  " + "\n  ".join(items[:limit]) + more


# ---------------------------------------------------------------------------------------------------- writing


def to_kohya(
    unet_sd: Mapping[str, torch.Tensor] | None,
    te_sd: Mapping[str, torch.Tensor] | None,
    unet_alpha: float,
    te_alpha: float,
    dtype: torch.dtype = torch.float32,
    alphas: Alphas | None = None,
) -> dict[str, torch.Tensor]:
    """peft state dicts (keys `<module>.lora_A.weight`) -> kohya SD1 tensors, with one `.alpha` per module.

    `alphas` ("unet.<module>" / "text_encoder.<module>" -> alpha, as `load_kohya_lora` returns) overrides the
    per-model alpha module by module (resized or extracted LoRAs have per-module ranks and alphas)."""
    out: dict[str, torch.Tensor] = {}
    bad: list[str] = []
    alphas = alphas or {}
    for sd, alpha, kind in ((unet_sd, unet_alpha, "unet"), (te_sd, te_alpha, "text_encoder")):
        for key, value in (sd or {}).items():
            match = PEFT_KEY.fullmatch(key)
            if match is None:  # e.g. DoRA magnitudes or LoRA biases: kohya's LoRA has no place for them
                bad.append(key)
                continue
            name = kohya_name(match["module"], kind == "text_encoder")
            part = "lora_down" if match["part"] == "A" else "lora_up"
            out[f"{name}.{part}.weight"] = value.detach().to("cpu", dtype).contiguous()
            module_alpha = alphas.get(f"{kind}.{match['module']}", alpha)
            out[f"{name}.alpha"] = torch.tensor(float(module_alpha), dtype=dtype)
    if bad:
        raise LoraFormatError(f"{len(bad)} LoRA tensor(s) have no kohya equivalent:{_listing(bad)}")
    return out


def tag_frequency(captions: list[str]) -> dict[str, int]:
    """Tag counts as kohya computes them: captions split on commas, tags stripped."""
    counts: dict[str, int] = {}
    for caption in captions:
        for tag in (t.strip() for t in caption.split(",")):
            if tag:
                counts[tag] = counts.get(tag, 0) + 1
    return counts


def kohya_metadata(
    *,
    base_model: str,
    steps: int = 0,
    epoch: int = 0,
    resolution: int | tuple[int, int] = 512,
    tag_frequencies: Mapping[str, Mapping[str, int]] | None = None,
    training_comment: str = "",
    config: Any = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """kohya-style `ss_*` metadata that A1111/ComfyUI show; `tag_frequencies` maps a dataset name to tag counts;
    `base`: the model family's fields (`Family.kohya_metadata`), default SD 1.x's.

    ss_network_dim/alpha/args and the `sshs_*` hashes depend on the tensors: `write_kohya_file` sets them from the
    tensors it writes.
    """
    size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    meta = {
        "ss_network_module": "networks.lora",
        "ss_base_model_version": "sd_v1",
        "ss_v2": "False",
        "ss_sd_model_name": os.path.basename(str(base_model).rstrip("/")),
        "ss_steps": str(steps),
        "ss_epoch": str(epoch),
        "ss_resolution": str(size),
        "ss_tag_frequency": json.dumps(tag_frequencies or {}),
        "ss_training_comment": training_comment,
    }
    meta.update(base or {})
    if config is not None:
        meta["sdft_config"] = config_json(config)
    return meta


def kohya_file_name(cfg) -> str:
    """The kohya/A1111 file's name is what A1111 shows as the LoRA's name: the run name (and phase, if not main)."""
    return cfg.name if cfg.phase.name == "main" else f"{cfg.name}_{cfg.phase.name}"


def run_metadata(cfg, instances: list, base: Mapping[str, str] | None = None) -> Callable[[int, int], dict[str, str]]:
    """ss_* metadata of a training phase's kohya files at a given (step, epoch): base, resolution, tags per folder
    (concept), the phase's resolved config. `instances`: the phase's training examples (sdft/data/dataset.py);
    `base`: the model family's fields (`Family.kohya_metadata`: ss_v2, ss_base_model_version, ss_v_parameterization)."""
    by_folder: dict[str, list[str]] = {}
    for e in instances:
        by_folder.setdefault(e.concept.name if e.concept else e.path.parent.name, []).append(e.prompt)
    tags = {name: tag_frequency(prompts) for name, prompts in by_folder.items()}
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)

    def metadata(step: int, epoch: int) -> dict[str, str]:
        return kohya_metadata(
            base=base,
            base_model=cfg.model.path,
            steps=step,
            epoch=epoch,
            resolution=cfg.data.resolution,
            tag_frequencies=tags,
            training_comment=f"sdft: {cfg.data.instance_prompt}",
            config=resolved,
        )

    return metadata


def safetensors_hashes(tensors: dict[str, torch.Tensor], metadata: Mapping[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) as kohya's `train_util.precalculate_safetensors_hashes` computes them.

    Both hash the file that would hold the tensors and only the `ss_*` metadata: the model hash is the sha256 of
    everything after the header, the legacy hash the first 8 hex digits of sha256(bytes 0x100000..0x110000).
    """
    data = safetensors.torch.save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    model_hash = tensors_sha256(data)
    legacy_hash = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy_hash


def kohya_tensors(
    unet: nn.Module | None, text_encoder: nn.Module | None, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """The adapters of `unet`/`text_encoder` as kohya/LyCORIS tensors (OFT as `.diff` weight differences; see
    adapters/lycoris.py)."""
    tensors: dict[str, torch.Tensor] = {}
    for kind, model in (("unet", unet), ("text_encoder", text_encoder)):
        if model is None or not has_lora(model):
            continue
        if getattr(model.peft_config[ADAPTER_NAME], "use_rslora", False):
            raise LoraFormatError(
                f"{type(model).__name__}: rsLoRA has no kohya SD1 equivalent; "
                "save this adapter with sdft.adapters.formats.save_lora instead."
            )
        try:
            layers = layer_tensors(model)
        except NoKohyaFormat as e:
            raise LoraFormatError(f"{type(model).__name__}: {e}.") from None
        for module, parts in layers.items():
            name = kohya_name(module, kind == "text_encoder")
            for part, value in parts.items():
                tensors[f"{name}.{part}"] = value.to(dtype).contiguous()
    return tensors


def save_kohya_lora(
    unet: nn.Module | None,
    text_encoder: nn.Module | None,
    path: str | os.PathLike,
    metadata: Mapping[str, str],
    fp16: bool = False,
) -> Path:
    """Write the adapter of `unet`/`text_encoder` as a kohya SD1 `.safetensors` file (LoRA, LoCon, DoRA, LoHa or LoKr
    keys), atomically, with sshs_* hashes and ss_network_* read off the tensors."""
    tensors = kohya_tensors(unet, text_encoder, torch.float16 if fp16 else torch.float32)
    if not tensors:
        raise LoraFormatError("save_kohya_lora: neither the U-Net nor the text encoder has a LoRA adapter.")
    return write_kohya_file(tensors, path, metadata)


def write_kohya_file(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str]) -> Path:
    """Write kohya tensors with string metadata, atomically: ss_network_module/dim/alpha/args are read off the tensors
    (never the config: per-layer ranks after resize or import stay true), old sshs_* hashes are replaced."""
    path = Path(path)
    meta = {str(k): str(v) for k, v in metadata.items() if not str(k).startswith("sshs_")}
    for key in ("ss_network_args", "ss_network_dim", "ss_network_alpha"):  # only what the tensors say (OFT's
        meta.pop(key, None)  # `.diff` file has no rank or alpha)
    meta.update(tensor_metadata(tensors))
    meta["sshs_model_hash"], meta["sshs_legacy_hash"] = safetensors_hashes(tensors, meta)
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata=meta)
    return path


# ---------------------------------------------------------------------------------------------------- reading


def _decode(name: str) -> str:
    """`down_blocks_0_attentions_0_..._to_q` -> `down_blocks.0.attentions.0...to_q` (no model at hand)."""
    dotted = "." + name.replace("_", ".") + "."
    for compound in COMPOUND_NAMES:
        dotted = dotted.replace("." + compound.replace("_", ".") + ".", "." + compound + ".")
    return dotted.strip(".")


def lora_modules(model: nn.Module | None) -> dict[str, nn.Module]:
    """Module name -> the plain layer a LoRA can sit on (peft wrappers resolved to their base layer)."""
    if model is None:
        return {}
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            out[name] = module.get_base_layer()
        elif isinstance(module, (nn.Linear, nn.Conv2d)) and ".lora_" not in name and ".base_layer" not in name:
            out[name] = module
    return out


def _resolve(kind: str, name: str, table: dict[str, str] | None) -> str | None:
    """A kohya module name -> our module name, from the model's own names when given, else by decoding."""
    if table is not None:
        return table.get(name)
    decoded = _decode(name)
    return decoded.removeprefix("text_model.") if kind == "text_encoder" else decoded


def _from_kohya(sd: Mapping[str, torch.Tensor], tables: dict[str, dict[str, str] | None], errors: list[str]):
    out: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "text_encoder": {}}
    alphas: Alphas = {}
    for key, value in sd.items():
        lora_name, _, part = key.partition(".")
        if lora_name.startswith(SDXL_PREFIXES):
            errors.append(f"{key}: SDXL text encoder key (lora_te1_/lora_te2_); this file is an SDXL LoRA, not SD 1.x")
            continue
        kind = next((k for k, prefix in PREFIXES.items() if lora_name.startswith(prefix)), None)
        if kind is None or (part not in KOHYA_PARTS and part != "alpha"):
            errors.append(f"{key}: not a kohya LoRA key (lora_unet_/lora_te_ + .lora_down/.lora_up/.alpha)")
            continue
        stem = lora_name.removeprefix(PREFIXES[kind])
        module = _resolve(kind, stem, tables[kind])
        if module is None:
            errors.append(f"{key}: no such layer in the {kind}")
        elif part == "alpha":
            alphas[f"{kind}.{module}"] = float(value.item())
        else:
            out[kind][f"{module}.lora_{KOHYA_PARTS[part]}.weight"] = value
    for kind, state in out.items():  # no .alpha in the file: kohya and diffusers use alpha = rank (scale 1)
        for key, value in state.items():
            if key.endswith(".lora_A.weight"):
                alphas.setdefault(f"{kind}.{key.removesuffix('.lora_A.weight')}", float(value.shape[0]))
    return out["unet"], out["text_encoder"], alphas


def _from_diffusers(sd: Mapping[str, torch.Tensor], metadata: Mapping[str, str], errors: list[str]):
    parts: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "text_encoder": {}}
    for key, value in sd.items():
        kind, _, rest = key.partition(".")
        if kind == "text_encoder":  # both `text_encoder.text_model.encoder...` (conventional) and transformers 5 names
            rest = rest.removeprefix("text_model.")
        if kind not in parts:
            errors.append(f"{key}: neither a unet. nor a text_encoder. key")
        else:
            parts[kind][rest] = value
    unet_sd, te_sd = parts["unet"], parts["text_encoder"]
    if unet_sd and not any(".lora_A." in k for k in unet_sd):  # older diffusers layouts: diffusers converts
        unet_sd = convert_unet_state_dict_to_peft(unet_sd)
    if te_sd and not any(".lora_A." in k for k in te_sd):
        te_sd = convert_state_dict_to_peft(te_sd)
    adapter = json.loads(metadata.get("lora_adapter_metadata", "{}"))
    alphas: Alphas = {}
    for kind, state in (("unet", unet_sd), ("text_encoder", te_sd)):
        alpha = adapter.get(f"{kind}.lora_alpha")
        pattern = adapter.get(f"{kind}.alpha_pattern") or {}
        for key, value in state.items():
            module, _, part = key.partition(".lora_")
            if part == "A.weight":  # without metadata diffusers uses alpha = rank (scale 1)
                default = alpha if alpha is not None else value.shape[0]
                alphas[f"{kind}.{module}"] = float(pattern.get(get_pattern_key(list(pattern), module), default))
    return unet_sd, te_sd, alphas


def _check_shapes(kind: str, sd: dict[str, torch.Tensor], modules: dict[str, nn.Module], errors: list[str]) -> None:
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        match = PEFT_KEY.fullmatch(key)
        if match is None:
            errors.append(f"{kind}.{key}: not a LoRA down/up weight")
        else:
            pairs.setdefault(match["module"], {})[match["part"]] = value
    for name, pair in pairs.items():
        layer = modules.get(name)
        if layer is None:
            errors.append(f"{kind}.{name}: no such Linear/Conv2d layer")
            continue
        if set(pair) != {"A", "B"}:
            errors.append(f"{kind}.{name}: has lora_{'A' if 'A' in pair else 'B'} but not its partner")
            continue
        down, up = pair["A"], pair["B"]
        if isinstance(layer, nn.Conv2d):
            if down.ndim == 2 and layer.kernel_size == (1, 1):  # a linear LoRA on a 1x1 conv: same maths
                down, up = down[:, :, None, None], up[:, :, None, None]
                sd[f"{name}.lora_A.weight"], sd[f"{name}.lora_B.weight"] = down, up
            want_down = (down.shape[0], layer.in_channels, *layer.kernel_size)
            want_up = (layer.out_channels, down.shape[0], 1, 1)
        else:
            want_down, want_up = (down.shape[0], layer.in_features), (layer.out_features, down.shape[0])
        if tuple(down.shape) != want_down or tuple(up.shape) != want_up:
            errors.append(
                f"{kind}.{name}: LoRA shapes down {tuple(down.shape)} / up {tuple(up.shape)} do not fit the layer "
                f"(expected {want_down} / {want_up})"
            )


def _name_table(model: nn.Module | None, kind: str) -> dict[str, str] | None:
    """kohya name (without prefix) -> module name, built from the model's layers as kohya itself does."""
    if model is None:
        return None
    cut = len(PREFIXES[kind])
    return {kohya_name(name, kind == "text_encoder")[cut:]: name for name in lora_modules(model)}


def _convert(sd, metadata, unet, text_encoder, errors):
    if not sd:
        errors.append("the file holds no tensors")
        return {}, {}, {}
    if all(k.startswith("lora_") for k in sd):
        tables = {"unet": _name_table(unet, "unet"), "text_encoder": _name_table(text_encoder, "text_encoder")}
        return _from_kohya(sd, tables, errors)
    if all(k.startswith(("unet.", "text_encoder.")) for k in sd):
        return _from_diffusers(sd, metadata, errors)
    odd = [k for k in sd if not k.startswith(("lora_", "unet.", "text_encoder."))] or list(sd)
    errors.extend(f"{k}: neither kohya (lora_unet_/lora_te_) nor diffusers (unet./text_encoder.) LoRA key" for k in odd)
    return {}, {}, {}


def check_lora_fits(
    state_dict: Mapping[str, torch.Tensor],
    unet: nn.Module | None,
    text_encoder: nn.Module | None,
    metadata: Mapping[str, str] | None = None,
    source: str = "LoRA",
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Alphas]:
    """Map a kohya- or diffusers-format LoRA state dict onto these models' layers: (unet_sd, te_sd, alphas) with
    peft keys. Every key must land on a layer of matching shape, else `LoraFormatError` lists what did not fit."""
    errors: list[str] = []
    unet_sd, te_sd, alphas = _convert(dict(state_dict), metadata or {}, unet, text_encoder, errors)
    for kind, sd, model in (("unet", unet_sd, unet), ("text_encoder", te_sd, text_encoder)):
        if sd and model is None:
            errors.append(f"{kind}: the file has {len(sd)} tensors for it but no {kind} was given")
        elif sd:
            _check_shapes(kind, sd, lora_modules(model), errors)
    if errors:
        raise LoraFormatError(
            f"{source} does not fit this SD 1.x model: {len(errors)} problem(s) among {len(state_dict)} keys:"
            f"{_listing(errors)}"
        )
    return unet_sd, te_sd, alphas


def load_kohya_lora(
    path: str | os.PathLike, unet: nn.Module | None = None, text_encoder: nn.Module | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Alphas]:
    """Read a kohya or diffusers LoRA file into peft-keyed (unet_sd, te_sd, alphas).

    With the models given, names come from their layers and every key is checked to fit (`check_lora_fits`);
    without, kohya names are decoded with SD 1.x naming rules and only the format is checked.
    """
    from sdft.adapters.lora_file import read_lora_file

    state, metadata = read_lora_file(path)
    if unet is not None or text_encoder is not None:
        return check_lora_fits(state, unet, text_encoder, metadata, source=str(path))
    errors: list[str] = []
    result = _convert(state, metadata, None, None, errors)
    if errors:
        raise LoraFormatError(f"{path} is not an SD 1.x LoRA file: {len(errors)} problem(s):{_listing(errors)}")
    return result
