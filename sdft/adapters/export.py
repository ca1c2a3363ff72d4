"""`sdft export`: merge LoRAs into a base model and write a diffusers folder and/or one single-file checkpoint.

  sdft export --base <model> [--config <diffusers dir|hub id>] [--vae <vae>] [--lora PATH[:WEIGHT] ...]
              [--diffusers DIR] [--single-file FILE.safetensors] [--dtype fp16|fp32] [--ckpt]

--base takes anything model.path takes (tiny, hub id, diffusers folder, single .safetensors file) and run folders:
a full-DreamBooth run (or its phase folder) exports its trained `model/`. --lora takes kohya or diffusers LoRA
files (ours or third-party) or LoRA run folders, each optionally weighted (`path:0.7`). Merging is diffusers':
load_lora_weights per LoRA (LoHa/LoKr/DoRA/OFT: injected with peft), set_adapters with the weights, fuse_lora,
unload_lora_weights. SD 1.x, SD 2.x and SDXL bases (the single file is written in the family's original layout,
sdft/families/single_file.py); each LoRA file is checked against the base before loading (sdft/adapters/fit.py).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from sdft.models.params import text_towers

log = logging.getLogger(__name__)


def _error(message: str):
    from sdft.errors import ConfigError

    return ConfigError(message)


def resolve_base(base: str) -> str:
    """A run folder -> its trained `model/` diffusers folder; anything else unchanged."""
    path = Path(base).expanduser()
    if not path.is_dir() or (path / "model_index.json").is_file():
        return base
    found = sorted(p.parent for p in [*path.glob("model/model_index.json"), *path.glob("*/model/model_index.json")])
    if len(found) == 1:
        log.info("Base %s: using the run's trained model %s", base, found[0])
        return str(found[0])
    if len(found) > 1:
        raise _error(f"--base {base} holds several trained models, name one: {', '.join(map(str, found))}")
    raise _error(
        f"--base {base} is a folder but neither a diffusers pipeline (model_index.json) nor a full-DreamBooth "
        "run folder (<run>/<phase>/model/model_index.json)."
    )


def resolve_lora(path: str) -> Path:
    """A LoRA file, or a run / phase / lora folder -> its LoRA file."""
    from sdft.adapters.formats import LORA_WEIGHT_NAME

    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_dir():
        raise _error(f"LoRA {path}: no such file or folder.")
    for pattern in (LORA_WEIGHT_NAME, f"lora/{LORA_WEIGHT_NAME}", f"*/lora/{LORA_WEIGHT_NAME}"):
        found = sorted(p.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise _error(f"LoRA folder {path} holds several LoRAs, name one: {', '.join(map(str, found))}")
    files = sorted(p.glob("*.safetensors"))
    if len(files) == 1:
        return files[0]
    raise _error(
        f"LoRA folder {path}: no {LORA_WEIGHT_NAME} (nor lora/ or <phase>/lora/) and not exactly one .safetensors."
    )


def parse_lora(spec: str) -> tuple[Path, float]:
    """`path[:weight]` -> (LoRA file, weight); the weight defaults to 1."""
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
        except ValueError:
            pass  # a colon inside the path itself
        else:
            return resolve_lora(head), weight
    return resolve_lora(spec), 1.0


def load_base(
    base: str,
    config: str | None = None,
    vae: str | None = None,
    allow_pickle: bool = False,
    local_files_only: bool = False,
):
    """The base pipeline, in fp32, via sdft.models.loading (same rules as model.path / model.config / model.vae)."""
    import torch

    from sdft.config import ModelConfig
    from sdft.families.load import load_pipeline

    cfg = ModelConfig(
        path=resolve_base(base), config=config, vae=vae, allow_pickle=allow_pickle, local_files_only=local_files_only
    )
    pipe = load_pipeline(cfg)
    for model in (pipe.unet, pipe.vae, *text_towers(pipe)):
        if model.dtype != torch.float32:  # merge and convert in fp32; the output dtype is chosen when writing
            model.to(dtype=torch.float32)
    return pipe


def merge_loras(pipe, loras: list[tuple[Path, float]]) -> None:
    """Fuse each LoRA times its weight into the pipeline's U-Net / text encoder weights (then drop the adapters)."""
    from sdft.adapters.fit import lora_fit
    from sdft.adapters.lora_file import read_lora_file
    from sdft.adapters.peft_files import inject_path
    from sdft.families import family_of

    if not loras:
        return
    names, weights = [], []
    for i, (path, weight) in enumerate(loras):
        name = f"lora{i}"
        with warnings.catch_warnings():  # peft warns that a second adapter is a second adapter: that is the point
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            if inject_path(path, pipe, name) is None:  # LoHa/LoKr/DoRA/OFT: injected with peft; LoRA: diffusers
                state, metadata = read_lora_file(path)
                lora_fit(state, pipe, metadata, str(path))  # a clear error before loading (as `sdft generate`)
                pipe.load_lora_weights(str(path), adapter_name=name)
        names.append(name)
        weights.append(weight)
        log.info("LoRA %s (weight %g) loaded", path, weight)
    pipe.set_adapters(names, adapter_weights=weights)
    components = ["unet", *family_of(pipe).text_parts]
    pipe.fuse_lora(components=components, lora_scale=1.0, adapter_names=names)
    pipe.unload_lora_weights()


def write_ckpt(pipe, path: Path, dtype) -> Path:
    """The original-layout checkpoint as a pickle `.ckpt` ({"state_dict": ...}), for tools that need one."""
    import torch

    from sdft.atomic import atomic_path
    from sdft.families.single_file import pipeline_to_original

    with atomic_path(path) as tmp:
        torch.save({"state_dict": pipeline_to_original(pipe, dtype)}, tmp)
    return path


def export(
    base: str,
    loras: list[tuple[Path, float]] | None = None,
    *,
    config: str | None = None,
    vae: str | None = None,
    diffusers_dir: str | os.PathLike | None = None,
    single_file: str | os.PathLike | None = None,
    dtype: str = "fp16",
    allow_ckpt: bool = False,
    allow_pickle: bool = False,
) -> list[Path]:
    """Load `base`, merge `loras`, write the requested outputs; returns the paths written."""
    import torch

    from sdft.adapters.formats import save_pipeline
    from sdft.families.single_file import save_single_file

    if diffusers_dir is None and single_file is None:
        raise _error("sdft export: name an output: --diffusers DIR and/or --single-file FILE.safetensors")
    if dtype not in ("fp16", "fp32"):
        raise _error(f"--dtype {dtype}: use fp16 or fp32")
    torch_dtype = torch.float16 if dtype == "fp16" else torch.float32
    if single_file is not None:
        suffix = Path(single_file).suffix.lower()
        if suffix == ".ckpt" and not allow_ckpt:
            raise _error(
                f"--single-file {single_file}: .ckpt is a pickle (loading it can run code); write "
                ".safetensors, or pass --ckpt if a tool really needs a .ckpt."
            )
        if suffix not in (".safetensors", ".ckpt"):
            raise _error(f"--single-file {single_file}: use a .safetensors file name")
    from sdft.adapters.lora_file import read_lora_file

    for path, _ in loras or []:  # a damaged or NaN LoRA fails now, before the base loads
        read_lora_file(path)
    pipe = load_base(base, config=config, vae=vae, allow_pickle=allow_pickle)
    merge_loras(pipe, list(loras or []))
    written = []
    if single_file is not None:
        path = Path(single_file)
        if path.suffix.lower() == ".ckpt":
            warnings.warn(
                f"Writing {path} as a pickle .ckpt: anyone loading it runs pickle; prefer .safetensors.", stacklevel=2
            )
            written.append(write_ckpt(pipe, path, torch_dtype))
        else:
            written.append(save_single_file(pipe, path, dtype=torch_dtype))
    if diffusers_dir is not None:
        pipe.to(dtype=torch_dtype)
        written.append(save_pipeline(pipe, diffusers_dir))
    return written
