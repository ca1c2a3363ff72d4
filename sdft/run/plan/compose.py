"""The run's config composed exactly as train.py composes it (conf/, Hydra overrides, --config-name) and checked with
train.py's checks: every phase's config, then every phase's data (nothing is traced before they pass)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sdft.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"  # train.py's config_path="conf"


def compose_run(overrides: list[str], config_name: str = "config", config_dir: Path | None = None) -> DictConfig:
    """conf/<config_name>.yaml with the overrides, merged onto the typed schema; unknown keys and bad values fail
    here with Hydra's / the schema's message, as train.py's do."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    import sdft.config  # noqa: F401  (registers the schema)
    from sdft.run.checks import check_overrides, typed_config

    check_overrides(list(overrides))  # a key that is gone: named with its new key, before Hydra's own error
    try:
        with initialize_config_dir(config_dir=str(config_dir or CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides))
        return typed_config(OmegaConf.to_container(cfg, resolve=False))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(str(err).splitlines()[0]) from None


def plan_run(cfg: DictConfig, device):
    """The plan of a composed run: its phases checked (train.py's checks and messages), then forecast."""
    from sdft.run.plan.plan import make_plan
    from sdft.run.train import checked_phases  # train.py's own checks, order and messages (settings resolved once)

    return make_plan(cfg, device, checked_phases(cfg))
