"""Value checks that need no model or data (issue 20): each bad value is one clear ConfigError before any long work.

Called from sdft.train.check_config for every phase's config, before the model loads.
"""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sdft.adapters.kinds import is_peft_kind
from sdft.errors import ConfigError


def check_values(cfg: DictConfig, data: DictConfig) -> None:
    """`data` is the resolved data view (a kohya TOML's settings merged in: sdft.data.folders.data_settings)."""
    cb, ad = cfg.callbacks, cfg.adapter
    if cb.keep_last_k < 1:
        raise ConfigError(
            f"callbacks.keep_last_k={cb.keep_last_k} would delete every checkpoint, resumable state "
            "included: keep at least 1 (set callbacks.checkpoint_every_n_steps=0 for no step checkpoints)."
        )
    if data.repeats < 1 or any(c.repeats is not None and c.repeats < 1 for c in data.concepts):
        raise ConfigError(
            "data.repeats (and each concept's repeats) must be >= 1: with 0 an epoch has no images and "
            "nothing is trained."
        )
    if cfg.optim.lr <= 0 or (cfg.optim.text_encoder_lr is not None and cfg.optim.text_encoder_lr < 0):
        raise ConfigError(
            f"optim.lr={cfg.optim.lr} (text_encoder_lr={cfg.optim.text_encoder_lr}): learning rates "
            "must be > 0, or the result is the untrained model (to freeze the text encoder, set "
            "adapter.train_text_encoder=false)."
        )
    if getattr(cfg.optim, "text_encoder_2_lr", None) is not None and cfg.optim.text_encoder_2_lr < 0:  # SDXL
        raise ConfigError(
            f"optim.text_encoder_2_lr={cfg.optim.text_encoder_2_lr}: learning rates must be >= 0 (to "
            "freeze both text towers, set adapter.train_text_encoder=false)."
        )
    for key, value in (
        ("data.resolution", data.resolution),
        ("callbacks.validation_resolution", cb.validation_resolution),
    ):
        if value is not None and (value < 8 or value % 8):
            raise ConfigError(
                f"{key}={value}: must be a positive multiple of 8 (the VAE downsamples by 8), "
                f"e.g. {max(8, value // 8 * 8)}."
            )
    if is_peft_kind(ad.kind):  # LoRA, LoCon, DoRA, LoHa, LoKr, OFT
        if ad.rank < 1:
            raise ConfigError(f"adapter.rank={ad.rank}: the adapter rank must be >= 1 (typical: 4 to 64).")
        if ad.conv_rank is not None and ad.conv_rank < 1:
            raise ConfigError(f"adapter.conv_rank={ad.conv_rank}: must be >= 1 (or unset: conv_rank = rank).")
        if ad.alpha is not None and ad.alpha <= 0:
            raise ConfigError(f"adapter.alpha={ad.alpha}: must be > 0 (or unset: alpha = rank).")
    if not 0.0 <= ad.dropout < 1.0:
        raise ConfigError(f"adapter.dropout={ad.dropout}: must be in [0, 1) (a probability; typical 0 to 0.1).")
    if cfg.phase.init_lora and Path(cfg.phase.init_lora).expanduser().is_file():
        from sdft.adapters.lora_file import read_lora_file

        read_lora_file(Path(cfg.phase.init_lora).expanduser())  # a damaged or NaN file fails now, not after loading


def typed_config(cfg: dict) -> DictConfig:
    """A plain container merged onto the schema; an unknown key (Hydra's `+key=` can add one) or a wrong type is a
    ConfigError naming the key. The message never repeats the value (it could be a secret)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, ValidationError

    from sdft.config import SdftConfig

    try:
        return OmegaConf.merge(OmegaConf.structured(SdftConfig), cfg)
    except ConfigKeyError as err:
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
