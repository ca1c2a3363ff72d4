"""The base model's architecture from its config files alone: modules built on fake tensors, no weight read.

Which configs: `tiny` / `toy` / `sdxl_tiny` are built by their own package code; a local diffusers folder gives its
`unet/`, `vae/`, `text_encoder*/` config.json; a hub id its config.json files from the local Hugging Face cache, else
the shipped SD 1.5 / SDXL base configs (sdft/models/sd15_arch.py, sdxl_arch.py) for the ids known to share them; a
single file the folder / hub id named by model.config, else the family's base configs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from sdft.config import TOY_MODEL, ModelConfig, ModelFamily
from sdft.errors import ModelLoadError
from sdft.families import BY_NAME, BY_TINY, family_of, get_family

# hub ids whose architecture is the shipped SD 1.5 or SDXL base one (fine-tunes keep their base's configs)
KNOWN_SD1 = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "runwayml/stable-diffusion-v1-5",
    "CompVis/stable-diffusion-v1-4",
    "SG161222/Realistic_Vision_V5.1_noVAE",
}
KNOWN_SDXL = {"stabilityai/stable-diffusion-xl-base-1.0", "SG161222/RealVisXL_V5.0"}
KNOWN_SD2 = {"stabilityai/stable-diffusion-2-1", "stabilityai/stable-diffusion-2"}
KNOWN = {**dict.fromkeys(KNOWN_SD1, ModelFamily.sd1), **dict.fromkeys(KNOWN_SDXL, ModelFamily.sdxl)}
KNOWN.update(dict.fromkeys(KNOWN_SD2, ModelFamily.sd2))
PRESETS = {f.preset: f for f in BY_NAME.values()}
META = torch.device("meta")
PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@dataclass
class Architecture:
    """Where the configs come from: `kind` is a preset name (a family's tiny model, toy, or its shipped base configs:
    sd15, sd21, sdxl) or `configs` (a dict of part -> config dict read from files)."""

    kind: str
    source: str
    configs: dict | None = None

    @property
    def family(self) -> ModelFamily:
        if self.kind in BY_TINY:
            return BY_TINY[self.kind].name
        if self.kind in PRESETS:
            return PRESETS[self.kind].name
        if self.configs:  # the family the U-Net config answers to
            unet = SimpleNamespace(config=SimpleNamespace(**self.configs["unet"]))
            return family_of(SimpleNamespace(unet=unet)).name
        return ModelFamily.sd1


def _read_folder(folder: Path) -> dict | None:
    configs = {}
    for part in PARTS:
        file = folder / part / "config.json"
        if file.is_file():
            configs[part] = json.loads(file.read_text())
    return configs if {"unet", "vae", "text_encoder"} <= set(configs) else None


def _from_hub_cache(repo: str, revision: str | None, cache_dir: str | None) -> dict | None:
    from huggingface_hub import try_to_load_from_cache

    configs = {}
    for part in PARTS:
        path = try_to_load_from_cache(repo, f"{part}/config.json", cache_dir=cache_dir, revision=revision)
        if isinstance(path, str):
            configs[part] = json.loads(Path(path).read_text())
    return configs if {"unet", "vae", "text_encoder"} <= set(configs) else None


def _preset_for(family: ModelFamily | None, name: str) -> Architecture:
    return Architecture(get_family(family or ModelFamily.sd1).preset, f"{name} (the shipped base configs)")


def architecture(cfg: ModelConfig) -> Architecture:
    """The architecture model.path names, from configs available offline; a clear error when none is."""
    path = cfg.path
    if path in (*BY_TINY, TOY_MODEL):
        return Architecture(path, path)
    family = ModelFamily(cfg.family) if cfg.family is not None else None
    local = Path(path).expanduser()
    if local.is_dir():
        configs = _read_folder(local)
        if configs is None:
            raise ModelLoadError(
                f"model.path={path}: no unet/, vae/ and text_encoder/ config.json in that folder (a diffusers "
                "folder has them); pass the folder of a diffusers pipeline."
            )
        return Architecture("configs", str(local), configs)
    if local.is_file():  # a single file: its architecture is model.config's, else the family's base
        if cfg.config:
            return architecture(ModelConfig(path=cfg.config, family=cfg.family, cache_dir=None))
        return _preset_for(family, path)
    from sdft.models.loading import HUB_ID

    if not HUB_ID.match(path):
        raise ModelLoadError(
            f"model.path={path!r} is neither an existing folder or file nor a hub id of the form owner/name."
        )
    configs = _from_hub_cache(path, cfg.revision, None)
    if configs is not None:
        return Architecture("configs", f"{path} (config.json files in the Hugging Face cache)", configs)
    if family is not None or path in KNOWN:
        return _preset_for(family or KNOWN[path], path)
    raise ModelLoadError(
        f"The architecture of {path} is not available offline. Download its config files only "
        f"(`hf download {path} --include '*/config.json'`, a few kB), pass model.path=<its diffusers folder>, or "
        "model.family=sd1|sd2|sdxl if it has the SD 1.5 / SD 2.1 (768-v) / SDXL base architecture."
    )


def build_models(arch: Architecture, device: str | torch.device = META) -> SimpleNamespace:
    """unet, vae, text_encoder (, text_encoder_2) on `device`: meta (nothing allocated) for the forecast, cpu
    (random weights) for benchmarks."""
    with torch.device(device):
        return _build(arch, torch.device(device))


def _build(arch: Architecture, device: torch.device) -> SimpleNamespace:
    models = {}
    if arch.kind in BY_TINY:
        pipe = BY_TINY[arch.kind].build_tiny()
        models = {part: getattr(pipe, part, None) for part in PARTS}
    elif arch.kind == TOY_MODEL:
        from sdft.models.toy_arch import toy_text_encoder, toy_tokenizer, toy_unet, toy_vae

        models = dict(unet=toy_unet(), vae=toy_vae(), text_encoder=toy_text_encoder(toy_tokenizer()))
    elif arch.kind in PRESETS:
        models = PRESETS[arch.kind].arch_models(device)
    else:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        c = arch.configs
        towers = {"text_encoder": CLIPTextModel, "text_encoder_2": CLIPTextModelWithProjection}  # as diffusers loads
        models = dict(unet=UNet2DConditionModel.from_config(c["unet"]), vae=AutoencoderKL.from_config(c["vae"]))
        models.update({part: cls(CLIPTextConfig(**c[part])) for part, cls in towers.items() if part in c})
    for model in filter(None, models.values()):
        model.eval()
    return SimpleNamespace(**{part: models.get(part) for part in PARTS}, family=arch.family)


def fake_mode():
    """A FakeTensorMode that also accepts the few real tensors library code makes outside it: tensors carry
    shapes, dtypes and devices, no storage."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


def param_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())
