"""Concepts: which folders hold which subject, with what prompt, repeats and loss weight.

Three ways to describe a dataset, all resolved here into a list of `Concept`s (docs/data.md):
  * data.instance_dir (+ instance_prompt): a plain folder, or a kohya tree of `<repeats>_<trigger> <class>` folders;
  * data.concepts: a list like DreamBooth's concepts_list (instance dir, prompts, class dir, repeats, loss weight);
  * data.kohya_toml: a kohya-ss dataset config (see sdft/data/kohya_toml.py).
Class/regularisation folders use kohya's `<repeats>_<class>` naming (or are plain folders); that naming and `Concept`
live in sdft/data/concepts.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sdft.config import DataConfig
from sdft.data.captions import CaptionOptions, normalize_extension
from sdft.data.concepts import Concept, class_key_of, kohya_subfolders, parse_kohya_name, split_tokens
from sdft.data.images import check_folder, list_images
from sdft.data.kohya_toml import KohyaDataset, load_kohya_toml
from sdft.errors import ConfigError, DataError


def data_settings(cfg: DataConfig | DictConfig, kohya: KohyaDataset | None = None) -> DictConfig:
    """The data config with a kohya TOML's dataset-level settings (resolution, buckets, batch size...) merged in.

    `kohya`: the TOML already read (sdft/data/phase_data.py reads it once per phase); else it is read here."""
    base = OmegaConf.merge(OmegaConf.structured(DataConfig), cfg)
    if base.kohya_toml:
        base = OmegaConf.merge(base, (kohya or load_kohya_toml(base.kohya_toml)).settings)
    return base


def _options(cfg, concept_cfg=None) -> dict:
    def pick(name, default):
        value = getattr(concept_cfg, name, None) if concept_cfg is not None else None
        return default if value is None else value

    return dict(
        caption_extension=normalize_extension(pick("caption_extension", cfg.caption_extension)),
        captions=CaptionOptions(
            bool(pick("shuffle_caption", cfg.shuffle_caption)),
            int(pick("keep_tokens", cfg.keep_tokens)),
            float(cfg.caption_dropout),
            float(cfg.caption_tag_dropout_rate),
            bool(cfg.caption_variants),
            bool(cfg.caption_wildcards),
        ),
        flip=bool(pick("flip", cfg.random_flip)),
        recursive=bool(cfg.recursive),
        resolution=pick("resolution", None),
    )


@dataclass(frozen=True)
class FolderSettings:
    """What the config gives a dataset folder's concepts (a kohya `<n>_<tokens>` name supplies repeats, prompt and
    class where the config leaves them unset). Built by `folder_settings`."""

    what: str  # the config key that named the folder, for messages
    options: dict  # Concept's caption / flip / recursive / resolution fields (_options)
    default_repeats: int  # data.repeats: a plain folder's repeats when `repeats` is unset
    prompt: str | None = None
    class_prompt: str | None = None
    repeats: int | None = None
    loss_weight: float = 1.0
    trigger: str | None = None
    class_dir: Path | None = None
    is_reg: bool = False


def folder_settings(cfg, what: str, concept_cfg=None, **fields) -> FolderSettings:
    """FolderSettings of data config `cfg` (and of one data.concepts entry, whose set options win)."""
    return FolderSettings(what, _options(cfg, concept_cfg), int(cfg.repeats), **fields)


def concepts_in_folder(folder: Path, settings: FolderSettings) -> list[Concept]:
    """A folder named `<n>_<tokens>`, a folder of such folders (plus loose images), or a plain folder."""
    s = settings
    own = parse_kohya_name(folder.name)
    subs = kohya_subfolders(folder) if not own else []
    if subs:
        concepts = [_kohya_concept(sub, n, tokens, s) for sub, n, tokens in subs]
        if list_images(folder, recursive=False):  # loose images next to the kohya folders
            if not s.prompt:
                raise ConfigError(
                    f"{s.what}: {folder} holds images outside its `<repeats>_<tokens>` folders; set a "
                    "prompt for them (data.instance_prompt) or move them into such a folder."
                )
            concepts.append(
                Concept(
                    name=folder.name,
                    folder=folder,
                    prompt=s.prompt,
                    trigger=s.trigger,
                    class_prompt=s.class_prompt,
                    class_dir=s.class_dir,
                    class_key=class_key_of(s.class_prompt),
                    repeats=s.repeats or s.default_repeats,
                    loss_weight=s.loss_weight,
                    **{**s.options, "recursive": False},
                    is_reg=s.is_reg,
                )
            )
        return concepts
    if own:
        n, tokens = own
        return [_kohya_concept(folder, s.repeats or n, tokens, s, s.trigger)]
    if not s.prompt:
        raise ConfigError(
            f"{s.what}: {folder} is a plain folder; set its prompt (data.instance_prompt, or the concept's "
            "instance_prompt), or name it kohya-style `<repeats>_<trigger> <class>`."
        )
    key = class_key_of(s.class_prompt if not s.is_reg else (s.class_prompt or s.prompt))
    return [
        Concept(
            name=folder.name,
            folder=folder,
            prompt=s.prompt,
            trigger=s.trigger,
            class_prompt=s.class_prompt,
            class_dir=s.class_dir,
            class_key=key,
            repeats=s.repeats or s.default_repeats,
            loss_weight=s.loss_weight,
            **s.options,
            is_reg=s.is_reg,
        )
    ]


def _kohya_concept(folder: Path, n: int, tokens: str, s: FolderSettings, trigger: str | None = None) -> Concept:
    """A `<n>_<tokens>` folder's concept: a reg set of class `tokens`, or trigger + class split from `tokens`."""
    word, cls = split_tokens(tokens)
    if s.is_reg:
        return Concept(
            name=folder.name,
            folder=folder,
            prompt=tokens,
            class_prompt=tokens,
            class_key=class_key_of(tokens),
            repeats=n,
            loss_weight=s.loss_weight,
            **s.options,
            is_reg=True,
        )
    return Concept(
        name=folder.name,
        folder=folder,
        prompt=tokens,
        trigger=trigger or word,
        class_prompt=s.class_prompt or cls,
        class_dir=s.class_dir,
        class_key=class_key_of(cls),
        repeats=n,
        loss_weight=s.loss_weight,
        **s.options,
    )


def resolve_concepts(cfg: DataConfig | DictConfig, kohya: KohyaDataset | None = None) -> list[Concept]:
    """Every image set of the data config, instance and class (is_reg) sets alike; checks that folders exist.

    A kohya TOML's dataset-level settings (data_settings) do not change concepts, so `cfg` need not be resolved.
    `kohya`: the TOML already read (else it is read here)."""
    if cfg.kohya_toml:
        return (kohya or load_kohya_toml(cfg.kohya_toml)).concepts(cfg)
    if cfg.concepts:
        concepts = []
        for k, c in enumerate(cfg.concepts):
            what = f"data.concepts[{k}].instance_dir"
            folder = check_folder(c.instance_dir, what)
            class_dir = Path(c.class_dir).expanduser() if c.class_dir else None
            settings = folder_settings(
                cfg,
                what,
                c,
                prompt=c.instance_prompt,
                class_prompt=c.class_prompt,
                repeats=c.repeats,
                loss_weight=c.loss_weight,
                trigger=c.trigger or cfg.trigger,
                class_dir=class_dir,
                is_reg=c.is_reg,
            )
            concepts += concepts_in_folder(folder, settings)
        return concepts
    if not cfg.instance_dir:
        raise ConfigError("No data: set data.instance_dir (a folder of images), data.concepts, or data.kohya_toml.")
    folder = check_folder(cfg.instance_dir, "data.instance_dir")
    class_dir = Path(cfg.class_dir).expanduser() if cfg.class_dir else None
    settings = folder_settings(
        cfg,
        "data.instance_dir",
        prompt=cfg.instance_prompt,
        class_prompt=cfg.class_prompt,
        trigger=cfg.trigger,
        class_dir=class_dir,
    )
    return concepts_in_folder(folder, settings)


def class_dir_concepts(class_dir: Path, cfg) -> list[Concept]:
    """A class folder holding kohya `<repeats>_<class>` folders: its sets as reg concepts (else [])."""
    settings = folder_settings(cfg, "data.class_dir", is_reg=True)
    return [_kohya_concept(sub, n, tokens, settings) for sub, n, tokens in kohya_subfolders(class_dir)]


def data_source(cfg: DataConfig | DictConfig) -> str:
    """Where the data comes from, for log lines: the kohya TOML, the concepts' folders, or data.instance_dir."""
    if cfg.kohya_toml:
        return f"kohya TOML {cfg.kohya_toml}"
    if cfg.concepts:
        return ", ".join(str(c.instance_dir) for c in cfg.concepts)
    return str(cfg.instance_dir)


def check_data_config(cfg: DataConfig | DictConfig, prior_enabled: bool) -> None:
    """Checks that need no images: prior preservation needs a class prompt somewhere."""
    # data.on_bad_images / missing_captions are enums (sdft/config.py): other values fail when the config is composed;
    # numeric ranges (data.caption_dropout ...) are declared there too and checked by sdft/run/checks.py
    for r in [*cfg.resolutions, *(c.resolution for c in cfg.concepts if c.resolution is not None)]:
        if r % 8:
            raise ConfigError(
                f"resolution {r} in data.resolutions / a concept's resolution: must be a positive multiple of 8 "
                f"(the VAE downsamples by 8), e.g. {max(8, r // 8 * 8)}."
            )
    folder = Path(cfg.instance_dir).expanduser() if cfg.instance_dir else None
    kohya_named = folder is not None and bool(parse_kohya_name(folder.name) or kohya_subfolders(folder))
    concept_classes = any(c.class_prompt or c.is_reg for c in cfg.concepts)
    if prior_enabled and not (cfg.class_prompt or cfg.kohya_toml or concept_classes or kohya_named):
        raise ConfigError(
            "prior.enabled=true needs data.class_prompt (e.g. 'photo of a person'), class prompts in "
            "data.concepts, or kohya-named folders; or set prior=none."
        )


def require_images(concepts: list[Concept]) -> None:
    if not any(not c.is_reg for c in concepts):
        raise DataError("The dataset has only class (is_reg) image sets and no instance images.")


def default_validation_prompts(cfg: DataConfig | DictConfig, concepts: list[Concept], limit: int = 4) -> list[str]:
    """Instance and class prompts of the data config (each concept's, for concepts / kohya folders / TOML); `concepts`
    are the phase's resolved ones (sdft/data/phase_data.py), so nothing is resolved again here."""
    if cfg.instance_prompt and not cfg.concepts and not cfg.kohya_toml:
        return [p for p in (cfg.instance_prompt, cfg.class_prompt) if p]
    prompts: list[str] = []
    for c in concepts:
        for p in (c.prompt, c.class_prompt) if not c.is_reg else ():
            if p and p not in prompts:
                prompts.append(p)
    return prompts[:limit]
