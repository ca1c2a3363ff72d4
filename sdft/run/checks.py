"""Value checks that need no model or data (issue 20): each bad value is one clear ConfigError before any long work.

Called from sdft.run.train.check_config for every phase's config, before the model loads.
"""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sdft.errors import ConfigError


def check_values(cfg: DictConfig, data: DictConfig) -> None:
    """`data` is the resolved data view (a kohya TOML's settings merged in: sdft.data.folders.data_settings)."""
    from sdft.config import DataConfig, SdftConfig

    where = f" (phase {cfg.phase.name!r})" if cfg.phase.name != "main" else ""
    check_ranges(cfg, SdftConfig, "", where)
    check_ranges(data, DataConfig, "data.", where)  # a kohya TOML's values, under the keys they stand for
    check_optimizer_args(cfg.optim.optimizer, where)
    for key, value in (
        ("data.resolution", data.resolution),
        ("callbacks.validation_resolution", cfg.callbacks.validation_resolution),
        ("eval.resolution", cfg.eval.resolution),
    ):
        if value is not None and value % 8:
            raise ConfigError(
                f"{key}={value}{where}: must be a positive multiple of 8 (the VAE downsamples by 8), "
                f"e.g. {max(8, value // 8 * 8)}."
            )
    check_prior_weights(cfg.prior, where)
    if cfg.phase.init_lora and Path(cfg.phase.init_lora).expanduser().is_file():
        from sdft.adapters.lora_file import read_lora_file

        read_lora_file(Path(cfg.phase.init_lora).expanduser())  # a damaged or NaN file fails now, not after loading


def check_prior_weights(prior: DictConfig, where: str = "") -> None:
    """prior.loss_weight weighs the class images' loss only: set without class images (prior=base_prediction) it would
    be ignored without a word (issue 34's recipe screen lost a run to it)."""
    if prior.loss_weight != 1.0 and not prior.enabled:
        hint = (
            f"the base model's prediction is weighted by prior.base_prediction_weight (now {prior.base_prediction_weight})"
            if prior.base_prediction
            else "turn class images on with prior.enabled=true (prior=default)"
        )
        raise ConfigError(
            f"prior.loss_weight={prior.loss_weight}{where} weighs the class images' loss, but this run has none "
            f"(prior.enabled=false): {hint}."
        )


def check_ranges(cfg: DictConfig, schema: type, prefix: str = "", where: str = "") -> None:
    """Every numeric field of the dataclass `schema` (recursively) against the Range it declares in sdft/config.py
    (`ranged`); the first value outside is a ConfigError naming the key, the value, the range and the default."""
    import dataclasses
    import typing

    from sdft.config import field_range

    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key, value, hint = prefix + f.name, cfg.get(f.name), hints[f.name]
        if dataclasses.is_dataclass(hint):
            if value is not None:
                check_ranges(value, hint, key + ".", where)
            continue
        item = typing.get_args(hint)[0] if typing.get_origin(hint) in (list, typing.List) else None
        if item is not None and dataclasses.is_dataclass(item):  # data.concepts, phases
            for i, element in enumerate(value or []):
                check_ranges(element, item, f"{key}[{i}].", where)
            continue
        valid = field_range(f)
        if valid is None or value is None:
            continue
        for v in value if item is not None else [value]:
            if v not in valid:
                default = f.default_factory() if f.default is dataclasses.MISSING else f.default
                raise ConfigError(
                    f"{key}={value if item is None else list(value)}{where}: must be {valid.text()}"
                    f"{' for each value' if item is not None else ''}"
                    f"{f' ({valid.why})' if valid.why else ''}. Set {key} in that range in the config or on "
                    f"the command line (default: {'unset' if default is None else default})."
                )


def check_optimizer_args(node, where: str = "") -> None:
    """optim.optimizer's common arguments (betas, eps, weight_decay) against sdft.config.OPTIMIZER_ARG_RANGES: the
    first value outside is a ConfigError naming the key, as check_ranges does for the schema's fields."""
    from sdft.config import OPTIMIZER_ARG_RANGES

    for name, valid in OPTIMIZER_ARG_RANGES.items():
        value = node.get(name) if node else None
        if value is None:
            continue
        many = not isinstance(value, (int, float))
        if any(not isinstance(v, (int, float)) or v not in valid for v in (value if many else [value])):
            key = f"optim.optimizer.{name}"
            raise ConfigError(
                f"{key}={list(value) if many else value}{where}: must be {valid.text()}"
                f"{' for each value' if many else ''}{f' ({valid.why})' if valid.why else ''}. Set {key} in that "
                "range in the config or on the command line."
            )


def moved_key_error(key: str) -> ConfigError | None:
    """The error for a key that is gone (sdft.config.MOVED_KEYS), naming what to write instead; None for others."""
    from sdft.config import MOVED_KEYS

    if key not in MOVED_KEYS:
        return None
    return ConfigError(
        f"{key} is gone: write {MOVED_KEYS[key]} instead (the optimizer's own arguments are under optim.optimizer, "
        "every preset in conf/optim/ lists them; docs/techniques.md)."
    )


def check_overrides(overrides: list[str]) -> None:
    """Command-line overrides of a key that is gone fail naming the new key: Hydra's own error would only say the key
    is not in the schema. Hydra's grammar puts the key before the first `=`, after `+`, `++` or `~`."""
    for override in overrides:
        err = moved_key_error(override.lstrip("~+").split("=", 1)[0].strip())
        if err is not None:
            raise err


def typed_config(cfg: dict) -> DictConfig:
    """A plain container merged onto the schema; an unknown key (Hydra's `+key=` can add one) or a wrong type is a
    ConfigError naming the key. The message never repeats the value (it could be a secret)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, ValidationError

    from sdft.config import SdftConfig

    try:
        return OmegaConf.merge(OmegaConf.structured(SdftConfig), cfg)
    except ConfigKeyError as err:
        moved = moved_key_error(err.full_key)
        if moved is not None:
            raise moved from None
        raise ConfigError(
            f"Unknown config key {err.full_key}: sdft's config has no such field (sdft/config.py, "
            "docs in README.md). Check the spelling; `+key=value` cannot add keys."
        ) from None
    except ValidationError as err:
        raise ConfigError(
            f"Config key {err.full_key}: wrong type ({type(err).__name__}); see sdft/config.py for what it takes."
        ) from None


class CheckBeforeHydraWrites(Callback):
    """Hydra callback (conf/config.yaml): the composed config is checked against the schema before Hydra writes
    .hydra/*.yaml, so `+model.<secret>=...` (an unknown key) is refused and its value never lands in a file."""

    def _check(self, config: DictConfig) -> None:
        import sys

        from omegaconf import OmegaConf

        task = {k: v for k, v in OmegaConf.to_container(config, resolve=False).items() if k != "hydra"}
        try:
            typed_config(task)
        except ConfigError as err:
            print(f"Error: {err}", file=sys.stderr)  # Hydra's logging is not set up yet
            sys.exit(1)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config)
