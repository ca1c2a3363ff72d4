"""Lightning loggers from config: CSV (default), W&B (offline unless asked), TensorBoard, or none."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger

from sdft.config import LoggerConfig, LoggerKind
from sdft.errors import ConfigError


def make_logger(cfg: LoggerConfig, out_dir: Path, run_name: str, phase: str, hparams: dict) -> Logger | bool:
    """The configured logger for one phase, with the resolved config logged as hyper-parameters.

    CSV/TensorBoard: <out_dir>/logs/<phase>/. W&B: one run per phase, grouped by the run's name.
    """
    if cfg.kind == LoggerKind.none:
        return False
    if cfg.kind == LoggerKind.csv:
        logger = CSVLogger(save_dir=str(out_dir), name="logs", version=phase)
    elif cfg.kind == LoggerKind.wandb:
        group = cfg.group or sweep_group(run_name)
        from lightning.pytorch.loggers import WandbLogger  # the API key, if any, comes from WANDB_API_KEY

        logger = WandbLogger(
            project=cfg.project,
            entity=cfg.entity,
            name=f"{cfg.run_name or run_name}-{phase}" if phase != "main" else (cfg.run_name or run_name),
            group=group,
            tags=list(cfg.tags),
            offline=cfg.offline,
            save_dir=str(out_dir),
        )
    else:
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            logger = TensorBoardLogger(save_dir=str(out_dir), name="tensorboard", version=phase)
        except ModuleNotFoundError as err:
            raise ConfigError("logger=tensorboard needs the tensorboard package: pip install tensorboard") from err
    logger.log_hyperparams(hparams)
    return logger


def close_loggers(trainer) -> None:
    """End the phase's W&B run so the next phase starts its own (steps restart at 0 in each phase)."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()


def sweep_group(run_name: str) -> str:
    """Jobs of one Hydra multirun share a W&B group named after the sweep; a single run groups by its name."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            return f"{run_name}-{Path(HydraConfig.get().sweep.dir).name}"
    except ImportError:
        pass
    return run_name
