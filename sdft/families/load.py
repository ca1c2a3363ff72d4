"""All the ways to get a base pipeline, with the pipeline class of its family: the offline tiny models, a local
diffusers folder, a hub id, or a single-file checkpoint in the original (A1111 / civitai) layout; optionally with
another VAE (`model.vae`). The family-neutral helpers live in sdft/models/loading.py."""

from __future__ import annotations

import logging
from pathlib import Path

from diffusers import DiffusionPipeline, StableDiffusionPipeline
from diffusers.loaders.single_file_utils import SingleFileComponentError

from sdft.config import TOY_MODEL, ModelConfig
from sdft.errors import ModelLoadError
from sdft.families import BY_TINY, Family, check_family, checkpoint_family, family_of, get_family
from sdft.models.checkpoint_keys import checkpoint_keys
from sdft.models.loading import CONFIG_PATTERNS, HUB_ID, check_weights_file, config_only_vae, is_offline, load_vae
from sdft.models.text import check_clip_skip

log = logging.getLogger(__name__)


def folder_family(folder: Path) -> Family:
    """A diffusers folder's family from its model_index.json (pipeline class) and unet/config.json."""
    import json
    from types import SimpleNamespace

    unet = folder / "unet" / "config.json"
    config = json.loads(unet.read_text()) if unet.is_file() else {}
    if '"StableDiffusionXLPipeline"' in (folder / "model_index.json").read_text():
        config.setdefault("addition_embed_type", "text_time")
    return family_of(SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(**config))))


def from_folder(folder: Path) -> DiffusionPipeline:
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"model.path={folder} is a folder but not a diffusers pipeline (no model_index.json). "
            "Point model.path at the folder that holds model_index.json, unet/, vae/, text_encoder/, tokenizer/."
        )
    family = folder_family(folder)
    return family.pipeline_class().from_pretrained(folder, local_files_only=True, **family.load_kwargs())


def from_hub(cfg: ModelConfig) -> DiffusionPipeline:
    offline = is_offline(cfg)
    family = family_of(cfg)  # model=sdxl names its family: SDXL's pipeline class (no safety checker there)
    try:  # the token, if any, comes from HF_TOKEN or `huggingface-cli login`, never from the config
        return family.pipeline_class().from_pretrained(
            cfg.path, revision=cfg.revision, variant=cfg.variant, local_files_only=offline, **family.load_kwargs()
        )
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"Could not load model.path={cfg.path!r} from the Hugging Face hub"
            f"{' (offline mode: only the local cache is searched)' if offline else ''}: {err}\n"
            "Alternatives: model=tiny (offline tiny model), model.path=<local diffusers folder>, or go online "
            "(and set HF_TOKEN in the environment for gated repos)."
        ) from err


def resolve_config(cfg: ModelConfig, family: Family) -> str:
    """The local diffusers folder that gives a single file its architecture: model.config, default the family's base
    hub id.

    A hub id is resolved to its cached config files (only json/txt, no weights) so that diffusers never goes to
    the network on its own; offline and not cached is an error that says what to pass instead. A config of
    another family is an error.
    """
    config = cfg.config or family.hub_id
    local = Path(config).expanduser()
    if local.is_dir():
        if not (local / "model_index.json").is_file():
            raise ModelLoadError(
                f"model.config={config} is a folder but not a diffusers pipeline (no model_index.json)."
            )
        folder = str(local)
    elif not HUB_ID.match(config):
        raise ModelLoadError(f"model.config={config!r} is neither an existing folder nor a hub id (owner/name).")
    else:
        folder = config_snapshot(cfg, config, family)
    check_config_family(Path(folder), config, family, cfg.path)
    return folder


def config_snapshot(cfg: ModelConfig, config: str, family: Family) -> str:
    from huggingface_hub import snapshot_download

    offline = is_offline(cfg)
    try:
        return snapshot_download(config, allow_patterns=CONFIG_PATTERNS, local_files_only=offline)
    except (OSError, ValueError) as err:
        where = "is not in the local Hugging Face cache (offline)" if offline else "could not be fetched from the hub"
        default = f" (the default, {family.label}'s {family.hub_id})" if not cfg.config else ""
        raise ModelLoadError(
            f"model.path={cfg.path} is a single-file checkpoint; its architecture comes from the diffusers config "
            f"{config!r}{default}, which {where}: {err}\n"
            f"Pass model.config=<local diffusers folder of the same architecture> ({family.config_example}), or go "
            "online once so the config files are cached."
        ) from err


def check_config_family(folder: Path, config: str, family: Family, path: str) -> None:
    """model.config must describe a pipeline of the checkpoint's family (model_index.json, unet/config.json)."""
    if not (folder / "model_index.json").is_file():
        return  # diffusers itself reports a config snapshot without one
    found = folder_family(folder)
    if found.name != family.name:
        raise ModelLoadError(
            f"model.config={config} is an {found.label} pipeline but model.path={path} is a checkpoint of family "
            f"{family.name.value}; pass model.config=<diffusers folder of the checkpoint's architecture>."
        )


def from_single_file(path: Path, cfg: ModelConfig) -> tuple[DiffusionPipeline, bool]:
    """An original-layout checkpoint through diffusers' own converter (`from_single_file`), with the pipeline class
    of its family: detected from the keys, checked against model.family.

    A checkpoint without VAE weights (many SDXL fine-tunes ship so) takes model.vae, loaded first and given to the
    converter; without model.vae it is one clear error before any weight loads. Returns (pipeline, whether its VAE
    is model.vae's already)."""
    from sdft.models.original_layout import VAE_PREFIX

    check_weights_file(path, cfg.allow_pickle, "model.path")
    keys = checkpoint_keys(path)
    family = get_family(checkpoint_family(path, getattr(cfg, "family", None), keys))
    has_vae = any(k.startswith(VAE_PREFIX) for k in keys)
    if not has_vae and not cfg.vae:
        raise ModelLoadError(
            f"model.path={path} holds no VAE weights ({VAE_PREFIX}*): pass the VAE it was made for as "
            f"model.vae=<hub id, diffusers folder or single file> (e.g. model.vae={family.vae_example})."
        )
    config = resolve_config(cfg, family)
    # the converter cannot build the VAE from a file without one: it takes model.vae's
    extra_vae = {} if has_vae else dict(vae=load_vae(cfg.vae, cfg, config_only_vae(config)))
    try:
        pipe = family.pipeline_class().from_single_file(
            str(path), config=config, local_files_only=True, **family.load_kwargs(), **extra_vae
        )
    except (OSError, ValueError, RuntimeError, KeyError, SingleFileComponentError) as err:
        raise ModelLoadError(
            f"Could not load the single-file checkpoint model.path={path} with the architecture of {config}: {err}\n"
            f"Is it an {family.label} checkpoint in the original layout ({family.layout})? Does model.config name a "
            "diffusers folder of the same architecture?"
        ) from err
    return pipe, bool(extra_vae)


def load_pipeline(cfg: ModelConfig) -> StableDiffusionPipeline:
    """Load the base pipeline named by `cfg` (nothing trainable is set up here)."""
    vae_done = False
    if cfg.path in BY_TINY:
        pipe = from_folder(BY_TINY[cfg.path].ensure_tiny(cfg.cache_dir))
    elif cfg.path == TOY_MODEL:
        from sdft.models.toy_weights import load_toy_pipeline

        pipe = load_toy_pipeline()
    else:
        local = Path(cfg.path).expanduser()
        if local.is_dir():
            pipe = from_folder(local)
        elif local.is_file():
            pipe, vae_done = from_single_file(local, cfg)
        elif HUB_ID.match(cfg.path):
            pipe = from_hub(cfg)
        else:
            raise ModelLoadError(
                f"model.path={cfg.path!r} is neither an existing folder or file (looked in {Path.cwd()}) nor a hub "
                "id of the form owner/name. Use model=tiny, model=toy, model=sd15, model.path=<diffusers folder> or "
                "model.path=<checkpoint>.safetensors."
            )
    if cfg.config and not (cfg.path not in (*BY_TINY, TOY_MODEL) and Path(cfg.path).expanduser().is_file()):
        log.warning("model.config=%s is only used for single-file checkpoints; ignored for %s.", cfg.config, cfg.path)
    if cfg.vae and not vae_done:
        pipe.register_modules(vae=load_vae(cfg.vae, cfg, pipe.vae))
        log.info("VAE replaced by %s", cfg.vae)
    if cfg.prediction_type is not None:
        pipe.scheduler.register_to_config(prediction_type=cfg.prediction_type.value)
    check_clip_skip(cfg.clip_skip, pipe.text_encoder)
    check_family(cfg, pipe)
    return pipe
