"""Read LoHa / LoKr / DoRA / OFT files back into peft adapters (LoRA and LoCon go through kohya.py + diffusers).

Two sources: the sdft/diffusers-format file (peft state dict + the peft config as `lora_adapter_metadata`, every kind,
exact) and the kohya/LyCORIS file (LoHa, LoKr, DoRA; the inverse of adapters/lycoris.py). The adapter is injected with
peft (`add_adapter`) and its tensors set with `set_peft_model_state_dict`, so the model computes what the file means.
SD 1.x (`unet`, `text_encoder`: `lora_unet_` / `lora_te_`) and SDXL (`text_encoder_2` given too: `lora_te1_` /
`lora_te2_`, diffusers keys `text_encoder_2.`), the names as adapters/sdxl_files.py writes them.
"""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace
from typing import Mapping

import torch
from peft import LoHaConfig, LoKrConfig, LoraConfig, get_peft_config
from peft.config import PeftConfig
from peft.utils import set_peft_model_state_dict
from torch import nn

from sdft.adapters.kinds import is_adapter_param
from sdft.adapters.kohya import LoraFormatError, lora_modules
from sdft.families import Family, family_of

Parsed = dict[str, tuple[PeftConfig, dict[str, torch.Tensor]]]  # "unet"/"text_encoder"(_2) -> (config, peft state)
PARTS = ("unet", "text_encoder", "text_encoder_2")


def _kohya_stems(part: str, model: nn.Module, family: Family) -> dict[str, str]:
    """kohya name -> our module name for every layer of `model`, as the models' family names them (SD 1.x / SD 2.x:
    lora_unet_ / lora_te_; SDXL: lora_unet_ / lora_te1_ / lora_te2_, the U-Net's under kohya's original-layout names
    and under the diffusers-style names sdft wrote before)."""
    return family.kohya_read_names(part, lora_modules(model), model.config if part == "unet" else None)


def _most(values: Mapping[str, float]):
    return Counter(values.values()).most_common(1)[0][0]


def _patterned(cls, ranks: dict[str, int], alphas: dict[str, float], alpha_key: str, **kwargs) -> PeftConfig:
    """A peft config over exactly these modules, each with its own rank and alpha (patterns where they differ)."""
    rank, alpha = _most(ranks), _most(alphas)
    kwargs[alpha_key] = alpha
    return cls(
        r=rank,
        target_modules=sorted(ranks),
        rank_pattern={m: r for m, r in ranks.items() if r != rank},
        alpha_pattern={m: a for m, a in alphas.items() if a != alpha},
        **kwargs,
    )


def from_diffusers_file(
    state: Mapping[str, torch.Tensor], metadata: Mapping[str, str], models: Mapping[str, nn.Module | None] | None = None
) -> Parsed:
    """The sdft/diffusers-format file: `unet.`/`text_encoder.`(/`text_encoder_2.`) peft keys + the peft config in
    the metadata. Text towers: conventional (`text_model.`) or transformers-5 names, matched to the model's own."""
    adapter = json.loads(metadata.get("lora_adapter_metadata", "{}") or "{}")
    models = models or {}
    out: Parsed = {}
    for part in PARTS:
        level = "text_model." if part != "unet" and hasattr(models.get(part), "text_model") else ""
        sd = {
            level + k.removeprefix(part + ".").removeprefix("text_model."): v
            for k, v in state.items()
            if k.startswith(part + ".")
        }
        if not sd:
            continue
        conf = {k.removeprefix(part + "."): v for k, v in adapter.items() if k.startswith(part + ".")}
        if "peft_type" not in conf:
            raise LoraFormatError(
                f"{part}: the file has no peft config in its metadata (lora_adapter_metadata); "
                "it cannot be rebuilt as a LoHa/LoKr/DoRA/OFT adapter."
            )
        out[part] = (get_peft_config(conf), sd)
    return out


def _kohya_modules(state: Mapping[str, torch.Tensor], models: dict[str, nn.Module | None]):
    """kohya keys -> {part: {module: {suffix: tensor}}}, names resolved against the models' own layers (as kohya,
    A1111 and ComfyUI build their key maps from the model), so an SD 1.x file on SDXL (or back) fits nothing."""
    family = family_of(SimpleNamespace(**models))
    table = {
        stem: (part, name)
        for part, model in models.items()
        if model is not None
        for stem, name in _kohya_stems(part, model, family).items()
    }
    out: dict[str, dict[str, dict[str, torch.Tensor]]] = {p: {} for p in models}
    bad = []
    for key, value in state.items():
        stem, _, suffix = key.partition(".")
        if stem not in table:
            bad.append(key)
        else:
            part, module = table[stem]
            out[part].setdefault(module, {})[suffix] = value
    if bad:
        names = f"{family.label} ({family.kohya_prefixes})"
        raise LoraFormatError(f"{len(bad)} key(s) fit no layer of these {names} models, e.g. {bad[:5]}")
    return out


def _loha(modules: dict, model: nn.Module) -> tuple[PeftConfig, dict]:
    ranks = {m: int(t["hada_w1_b"].shape[0]) for m, t in modules.items()}
    alphas = {m: float(t["alpha"]) if "alpha" in t else float(ranks[m]) for m, t in modules.items()}
    sd = {f"{m}.{k}": v for m, t in modules.items() for k, v in t.items() if k.startswith("hada_")}
    return _patterned(LoHaConfig, ranks, alphas, alpha_key="alpha", use_effective_conv2d=False), sd


def _lokr(modules: dict, model: nn.Module) -> tuple[PeftConfig, dict]:
    ranks, alphas = {}, {}
    for m, t in modules.items():
        if "lokr_w1" not in t:
            raise LoraFormatError(
                f"{m}: LoKr with a low-rank first factor (lokr_w1_a/b) is not read (peft needs "
                "decompose_both for it); sdft reads the LyCORIS default layout (full lokr_w1)."
            )
        if "lokr_w2_b" in t:
            ranks[m], alphas[m] = int(t["lokr_w2_b"].shape[0]), float(t.get("alpha", t["lokr_w2_b"].shape[0]))
        else:  # both factors full: clients apply scale 1; a rank this high makes peft keep w2 full, alpha = r
            ranks[m] = max(t["lokr_w2"].shape[:2])
            alphas[m] = float(ranks[m])
    sd = {f"{m}.{k}": v for m, t in modules.items() for k, v in t.items() if k.startswith("lokr_")}
    config = _patterned(
        LoKrConfig,
        ranks,
        alphas,
        alpha_key="alpha",
        use_effective_conv2d=False,
        decompose_both=False,
        decompose_factor=-1,
    )
    return config, sd


def _dora(modules: dict, model: nn.Module) -> tuple[PeftConfig, dict]:
    """dora_scale (ComfyUI's output-axis convention, see lycoris.py) -> peft's magnitude m = scale * ||W+sBA|| / ||W||."""
    layers = lora_modules(model)
    ranks, alphas, sd = {}, {}, {}
    for m, t in modules.items():
        down, up = t["lora_down.weight"].float(), t["lora_up.weight"].float()
        ranks[m] = int(down.shape[0])
        alphas[m] = float(t.get("alpha", down.shape[0]))
        weight = layers[m].weight.detach().float()
        merged = weight + (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * alphas[m] / ranks[m]
        rows = lambda w: w.reshape(w.shape[0], -1).norm(dim=1)  # noqa: E731
        magnitude = t["dora_scale"].float().reshape(-1) * rows(merged) / rows(weight)
        sd[f"{m}.lora_A.weight"], sd[f"{m}.lora_B.weight"] = down, up
        sd[f"{m}.lora_magnitude_vector"] = magnitude.reshape(1, -1, 1, 1) if weight.dim() == 4 else magnitude
    return _patterned(LoraConfig, ranks, alphas, alpha_key="lora_alpha", use_dora=True), sd


def from_kohya_file(state: Mapping[str, torch.Tensor], kind: str, models: dict[str, nn.Module | None]) -> Parsed:
    """A kohya/LyCORIS LoHa, LoKr or DoRA file (as adapters/lycoris.py writes them) -> peft configs and states."""
    reader = {"loha": _loha, "lokr": _lokr, "dora": _dora}.get(kind)
    if reader is None:
        raise LoraFormatError(
            f"a kohya-format {kind} file (`.diff` weight differences, as sdft writes OFT for "
            "A1111/ComfyUI) is not read by sdft; give it the run's pytorch_lora_weights.safetensors."
            if kind == "full"
            else f"a kohya-format {kind} file is not read by sdft (OFT: only the sdft/diffusers file)."
        )
    return {part: reader(modules, models[part]) for part, modules in _kohya_modules(state, models).items() if modules}


def parse_file(
    state: Mapping[str, torch.Tensor], metadata: Mapping[str, str], kind: str, models: dict[str, nn.Module | None]
) -> Parsed:
    if all(k.startswith(tuple(p + "." for p in PARTS)) for k in state):
        return from_diffusers_file(state, metadata, models)
    return from_kohya_file(state, kind, models)


def inject(
    model: nn.Module, config: PeftConfig, sd: dict[str, torch.Tensor], name: str, trainable: bool, where: str
) -> int:
    """Add the adapter `name` to `model` and set its tensors; every tensor must land. Returns the layer count."""
    model.add_adapter(config, adapter_name=name)
    device = next(model.parameters()).device
    try:
        result = set_peft_model_state_dict(
            model, {k: v.to(device, torch.float32) for k, v in sd.items()}, adapter_name=name
        )
    except RuntimeError as err:  # a shape that does not fit
        raise LoraFormatError(f"{where}: the adapter tensors do not fit the layers: {err}") from None
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in getattr(result, "missing_keys", []) or [] if is_adapter_param(k) and f".{name}." in k + "."]
    if unexpected or missing:
        raise LoraFormatError(
            f"{where}: adapter tensors did not load: unexpected {unexpected[:5]}, missing {missing[:5]}"
        )
    for layer in model.modules():  # peft 0.21's OFT layers lack the `scaling` dict their set_scale reads (diffusers'
        if type(layer).__module__.startswith("peft.tuners.oft") and not hasattr(layer, "scaling"):  # set_adapters
            layer.scaling = {}  # calls it): with it empty, set_scale is a no-op; OFT has no weight (always 1)
    for pname, param in model.named_parameters():
        if is_adapter_param(pname) and f".{name}." in pname + ".":
            param.data = param.data.float()
            param.requires_grad_(trainable)
    return len(config.target_modules)


def inject_file(
    models: dict[str, nn.Module | None],
    state: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    kind: str,
    name: str,
    where: str,
    trainable: bool = False,
) -> tuple[str, ...]:
    """Parse a LoHa/LoKr/DoRA/OFT file and inject it into `models` as adapter `name`; returns the parts it holds."""
    parsed = parse_file(state, metadata, kind, models)
    for part, (config, sd) in parsed.items():
        if models.get(part) is None:
            raise LoraFormatError(f"{where}: the file has tensors for the {part} but no {part} was given")
        inject(models[part], config, sd, name, trainable, f"{where} ({part})")
    return tuple(parsed)


def inject_path(path, pipe, name: str) -> tuple[str, ...] | None:
    """Inject the file at `path` into the pipeline as adapter `name` if it is a LoHa/LoKr/DoRA/OFT file; None (and
    nothing done) for a LoRA / LoCon file, which diffusers' load_lora_weights reads."""
    from sdft.adapters.lora_file import lora_header, read_lora_file
    from sdft.adapters.lycoris import file_kind

    kind = file_kind(lora_header(path)[0])
    if kind is None:
        return None
    state, metadata = read_lora_file(path)
    from sdft.families import family_of

    models = {part: getattr(pipe, part) for part in ("unet", *family_of(pipe).text_parts)}
    return inject_file(models, state, metadata, kind, name, str(path))
