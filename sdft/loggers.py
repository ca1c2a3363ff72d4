"""Lightning loggers from config: CSV (default), W&B (offline unless asked), TensorBoard, or none."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger

from sdft.config import LoggerConfig, LoggerKind
from sdft.errors import ConfigError


def make_logger(cfg: LoggerConfig, out_dir: Path, run_name: str, hparams: dict) -> Logger | bool:
    """The configured logger, with the resolved run config logged as hyper-parameters."""
    if cfg.kind == LoggerKind.none:
        return False
    if cfg.kind == LoggerKind.csv:
        logger = CSVLogger(save_dir=str(out_dir), name="logs", version="")
    elif cfg.kind == LoggerKind.wandb:
        from lightning.pytorch.loggers import WandbLogger  # the API key, if any, comes from WANDB_API_KEY

        logger = WandbLogger(
            project=cfg.project,
            entity=cfg.entity,
            name=cfg.run_name or run_name,
            group=cfg.group,
            tags=list(cfg.tags),
            offline=cfg.offline,
            save_dir=str(out_dir),
        )
    else:
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            logger = TensorBoardLogger(save_dir=str(out_dir), name="tensorboard", version="")
        except ModuleNotFoundError as err:
            raise ConfigError("logger=tensorboard needs the tensorboard package: pip install tensorboard") from err
    logger.log_hyperparams(hparams)
    return logger
