"""Import of a kohya-ss dataset config (`--dataset_config`): [general], [[datasets]], [[datasets.subsets]].

Subset keys fall back to their dataset's, then to [general]'s, then to sdft's data config, as in kohya.
Each [[datasets]] may have its own resolution (kohya's multi-resolution training): its subsets train at it, with
buckets and caches per resolution; the first dataset's is the run's data.resolution (grids, fixed-noise loss). The same
image_dir in two [[datasets]] trains at both. Supported: image_dir, num_repeats, class_tokens, is_reg, caption_extension, keep_tokens, shuffle_caption, flip_aug,
caption_dropout_rate, caption_tag_dropout_rate, enable_wildcard (as kohya: several lines of a caption file are variants,
one drawn per sample, and `{a|b|c}` wildcards; sdft's data.caption_variants + data.caption_wildcards), random_crop;
dataset/general: resolution, batch_size, enable_bucket, min_bucket_reso, max_bucket_reso, bucket_reso_steps, bucket_no_upscale. Other keys are reported (warning) and ignored.
Relative image_dir paths are taken from the TOML file's folder when they exist there, else from the working folder.
"""

from __future__ import annotations

import logging
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from sdft.data.captions import CaptionOptions, normalize_extension
from sdft.data.concepts import Concept, class_key_of, parse_kohya_name, split_tokens
from sdft.errors import ConfigError

log = logging.getLogger(__name__)

SUBSET_KEYS = {
    "image_dir",
    "num_repeats",
    "class_tokens",
    "is_reg",
    "caption_extension",
    "keep_tokens",
    "shuffle_caption",
    "flip_aug",
    "caption_dropout_rate",
    "caption_tag_dropout_rate",
    "enable_wildcard",
    "random_crop",
}
DATASET_KEYS = {
    "resolution",
    "batch_size",
    "enable_bucket",
    "min_bucket_reso",
    "max_bucket_reso",
    "bucket_reso_steps",
    "bucket_no_upscale",
}
DATASET_RESOLUTION = "dataset resolution"  # each subset's own [[datasets]] resolution, when they differ
SETTING_NAMES = {
    "batch_size": "batch_size",
    "enable_bucket": "enable_bucket",
    "min_bucket_reso": "min_bucket_reso",
    "max_bucket_reso": "max_bucket_reso",
    "bucket_reso_steps": "bucket_reso_steps",
    "bucket_no_upscale": "bucket_no_upscale",
}


def _resolution(value) -> int:
    if isinstance(value, (list, tuple)):
        w, h = (int(value[0]), int(value[-1]))
        if w != h:
            log.warning(
                "kohya resolution %s: sdft uses one resolution; training at %d (the same area).",
                value,
                int(math.sqrt(w * h)),
            )
        return int(math.sqrt(w * h))
    return int(value)


@dataclass
class KohyaDataset:
    path: Path
    settings: dict  # data-config keys from [general] / the first [[datasets]]
    subsets: list[dict]  # each subset with its inherited keys filled in

    def concepts(self, cfg) -> list[Concept]:
        out = []
        for k, sub in enumerate(self.subsets):
            folder = self.image_dir(sub.get("image_dir"), k)
            parsed = parse_kohya_name(folder.name)
            tokens = sub.get("class_tokens") or (parsed[1] if parsed else folder.name)
            repeats = int(sub.get("num_repeats", parsed[0] if parsed else 1))
            is_reg = bool(sub.get("is_reg", False))
            trigger, cls = (None, tokens) if is_reg else split_tokens(tokens)
            captions = CaptionOptions(
                bool(sub.get("shuffle_caption", cfg.shuffle_caption)),
                int(sub.get("keep_tokens", cfg.keep_tokens)),
                float(sub.get("caption_dropout_rate", cfg.caption_dropout)),
                float(sub.get("caption_tag_dropout_rate", cfg.caption_tag_dropout_rate)),
                bool(sub.get("enable_wildcard", cfg.caption_variants)),
                bool(sub.get("enable_wildcard", cfg.caption_wildcards)),
            )
            out.append(
                Concept(
                    name=folder.name,
                    folder=folder,
                    prompt=tokens,
                    trigger=trigger,
                    class_prompt=cls,
                    class_key=class_key_of(cls),
                    repeats=repeats,
                    caption_extension=normalize_extension(sub.get("caption_extension", cfg.caption_extension)),
                    captions=captions,
                    flip=bool(sub.get("flip_aug", cfg.random_flip)),
                    is_reg=is_reg,
                    recursive=bool(cfg.recursive),
                    resolution=sub.get(DATASET_RESOLUTION),
                )
            )
        return out

    def image_dir(self, value, k: int) -> Path:
        if not value:
            raise ConfigError(f"{self.path}: datasets subset {k} has no image_dir.")
        p = Path(value).expanduser()
        if not p.is_absolute() and (self.path.parent / p).exists():
            p = self.path.parent / p
        if not p.is_dir():
            raise ConfigError(
                f"{self.path}: subset {k} image_dir {value} is not a folder (relative paths are from "
                f"{self.path.parent} or {Path.cwd()})."
            )
        return p


def load_kohya_toml(path: str | Path) -> KohyaDataset:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"data.kohya_toml: {path} is not a file.")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"data.kohya_toml: {path} is not valid TOML: {err}") from err
    general = dict(doc.get("general", {}))
    datasets = doc.get("datasets", [])
    if not datasets:
        raise ConfigError(f"data.kohya_toml: {path} has no [[datasets]] table.")
    ignored = set()
    subsets, dataset_settings, resolutions = [], [], []
    for ds in datasets:
        merged = {**general, **{k: v for k, v in ds.items() if k != "subsets"}}
        ignored |= set(merged) - SUBSET_KEYS - DATASET_KEYS
        dataset_settings.append({k: merged[k] for k in DATASET_KEYS - {"resolution"} if k in merged})
        resolution = _resolution(merged["resolution"]) if "resolution" in merged else None
        resolutions.append(resolution)
        for sub in ds.get("subsets", []):
            ignored |= set(sub) - SUBSET_KEYS - DATASET_KEYS
            subsets.append(
                {**{k: v for k, v in merged.items() if k in SUBSET_KEYS}, **sub, DATASET_RESOLUTION: resolution}
            )
    if not subsets:
        raise ConfigError(f"data.kohya_toml: {path} has no [[datasets.subsets]] with an image_dir.")
    if ignored:
        log.warning("data.kohya_toml: %s: keys not used by sdft, ignored: %s", path, ", ".join(sorted(ignored)))
    if any(s != dataset_settings[0] for s in dataset_settings[1:]):
        log.warning(
            "data.kohya_toml: %s: the [[datasets]] differ in bucket/batch settings; sdft trains all subsets "
            "with the first dataset's: %s",
            path,
            dataset_settings[0],
        )
    if len(set(resolutions)) > 1:  # multi-resolution: each subset trains at its dataset's resolution
        log.info("data.kohya_toml: %s: [[datasets]] at resolutions %s", path, resolutions)
    else:
        for sub in subsets:
            sub[DATASET_RESOLUTION] = None
    first = dataset_settings[0]
    settings = {SETTING_NAMES[k]: v for k, v in first.items() if k in SETTING_NAMES}
    if resolutions[0] is not None:  # the run's resolution (grids, fixed-noise loss): the first dataset's
        settings["resolution"] = resolutions[0]
    if any(s.get("random_crop") for s in subsets):
        settings["center_crop"] = False
    return KohyaDataset(path, settings, subsets)
