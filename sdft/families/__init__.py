"""Model families (SD 1.x, SD 2.x, SDXL): one `Family` object per family answers every question whose answer differs
(docs/families.md). Callers ask `family_of(...)` (a pipeline, a training module, plan's models, a `ModelConfig` or a
single file's keys) or `get_family(name)`, then the family; they do not test which family they hold."""

from __future__ import annotations

from pathlib import Path

from sdft.config import ModelConfig, ModelFamily
from sdft.errors import ModelLoadError
from sdft.families.base import Family, FamilyParts, text_towers
from sdft.families.sd1 import Sd1Family
from sdft.families.sd2 import Sd2Family
from sdft.families.sdxl import SdxlFamily
from sdft.models.checkpoint_keys import checkpoint_keys

# Detection order: the most specific first; SD 1.x answers for anything else.
FAMILIES: tuple[Family, ...] = (SdxlFamily(), Sd2Family(), Sd1Family())
BY_NAME = {f.name: f for f in FAMILIES}
BY_TINY = {f.tiny_model: f for f in FAMILIES}

__all__ = ["FAMILIES", "Family", "FamilyParts", "family_of", "get_family", "text_towers"]


def get_family(name: ModelFamily | str) -> Family:
    return BY_NAME[ModelFamily(name)]


def family_of(obj) -> Family:
    """The family of a loaded pipeline / training module / anything with a `unet` (from its U-Net's config), of a
    `ModelConfig` (its model.family, else its tiny model's, else SD 1.x's) or of a single file's tensor names."""
    if isinstance(obj, ModelConfig) or (hasattr(obj, "path") and hasattr(obj, "family") and not hasattr(obj, "unet")):
        if getattr(obj, "family", None) is not None:
            return get_family(obj.family)
        return BY_TINY.get(obj.path, BY_NAME[ModelFamily.sd1])
    if isinstance(obj, (list, tuple, set)):
        keys = list(obj)
        return next(f for f in FAMILIES if f.matches_keys(keys))
    if getattr(obj, "unet", None) is None:  # text towers only (an adapter file's parts): the family with those parts
        towers = {p for p in ("text_encoder", "text_encoder_2") if getattr(obj, p, None) is not None}
        return next(f for f in reversed(FAMILIES) if set(f.text_parts) == towers)
    config = obj.unet.config
    return next(f for f in FAMILIES if f.matches_unet(config))


def pipeline_family(pipe) -> ModelFamily:
    """The family's name of a loaded pipeline (or of anything with a `unet`)."""
    return family_of(pipe).name


def checkpoint_family(
    path: Path, wanted: ModelFamily | str | None = None, keys: list[str] | None = None
) -> ModelFamily:
    """The family of a single file from its tensor names (SDXL: `conditioner.embedders.1.*`, SD 2.x: the OpenCLIP
    tower `cond_stage_model.model.*`, else SD 1.x); a different explicit ``model.family`` (``wanted``) is an error,
    before anything is loaded. `keys`: checkpoint_keys(path)."""
    keys = checkpoint_keys(path) if keys is None else keys
    try:
        family = family_of(keys)
    except ModelLoadError as err:
        raise ModelLoadError(f"model.path={path}: {err}") from None
    if wanted is not None and ModelFamily(wanted) != family.name:
        raise ModelLoadError(
            f"model.family={ModelFamily(wanted).value} but model.path={path} is an {family.label} checkpoint (its "
            f"keys: {family.layout}); set model.family={family.name.value} or leave it unset (it is detected from the "
            "file's keys)."
        )
    return family.name


def check_family(cfg: ModelConfig, pipe) -> ModelFamily:
    """The loaded pipeline's family; a different explicit ``model.family`` is an error."""
    family = pipeline_family(pipe)
    wanted = getattr(cfg, "family", None)  # absent from configs saved before model.family existed
    if wanted is not None and ModelFamily(wanted) != family:
        raise ModelLoadError(
            f"model.family={ModelFamily(wanted).value} but model.path={cfg.path} is a model of family {family.value}; "
            f"set model.family={family.value} or leave it unset (it is detected from the model)."
        )
    return family


def family_parts(pipe, cfg) -> FamilyParts:
    """The family's training parts for a loaded pipeline (options it does not support yet are refused)."""
    return family_of(pipe).parts(pipe, cfg)


def module_pipeline(module, tokenizer, tokenizer_2, scheduler):
    """The module's current weights as the pipeline of its family."""
    return family_of(module).module_pipeline(module, tokenizer, tokenizer_2, scheduler)


def img2img_pipeline(pipe):
    """The family's img2img pipeline over `pipe`'s components (no reload; LoRAs shared)."""
    return family_of(pipe).img2img(pipe)


def conditioning_for(family: ModelFamily | str):
    return get_family(family).conditioning()
