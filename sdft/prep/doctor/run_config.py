"""The doctor on a run config: every phase's dataset as `python train.py --config-name NAME overrides` would train it
(composed, typed and checked by the run's own code, so this module sits above sdft/run/)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from sdft.prep.doctor.inputs import DoctorData, from_data_settings, native_size


def compose_run_config(config_name: str, overrides: list[str], config_dir: str | None = None) -> DictConfig:
    """A run config composed as `python train.py --config-name NAME overrides` would (conf/ of the working folder, or
    `config_dir`), typed and checked like a run's."""
    from hydra import compose, initialize_config_dir

    import sdft.config  # noqa: F401  (registers the schema)
    from sdft.errors import ConfigError
    from sdft.run.checks import check_overrides

    check_overrides(list(overrides))  # a key that is gone: named with its new key, before Hydra's own error
    folder = Path(config_dir or "conf").expanduser().resolve()
    if not (folder / f"{config_name}.yaml").is_file():
        raise ConfigError(f"--config-name {config_name}: no {folder / (config_name + '.yaml')} (set --config-dir).")
    with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def from_run_config(cfg: DictConfig) -> list[DoctorData]:
    """Every phase's dataset of a run config (train.py's phases), its base's native size guessed by name."""
    from omegaconf import OmegaConf

    from sdft.run.checks import typed_config
    from sdft.run.phases import phase_configs

    cfg = typed_config(OmegaConf.to_container(cfg, resolve=False))  # unknown keys fail, as in a run
    phases = phase_configs(cfg)
    native = native_size(cfg.model)
    return [from_data_settings(p.data, f"phase {p.phase.name}", native) for p in phases]
