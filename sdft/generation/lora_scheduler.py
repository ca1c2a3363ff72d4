"""The scheduler a LoRA asks for at sampling time: the zero-SNR DDIM when it was trained with loss.zero_terminal_snr
(its training config read from the file's `sdft_config` metadata or the run's config.yaml)."""

from __future__ import annotations

from sdft.models.schedulers import zero_terminal_snr_scheduler


def lora_training_config(lora) -> dict:
    """The config a LoRA file was trained with: `sdft_config` in its metadata (the kohya file), else the phase's
    config.yaml up to three folders above it (lora/, checkpoints/step_N/); {} for a LoRA from elsewhere."""
    import json
    from pathlib import Path

    from omegaconf import OmegaConf

    from sdft.adapters.lora_file import lora_header
    from sdft.errors import LoraFormatError

    path = Path(lora)
    try:
        meta = lora_header(path)[1]
    except LoraFormatError:  # unreadable: the LoRA loader reports it; here the file only has no config
        meta = {}
    if "sdft_config" in meta:
        return json.loads(meta["sdft_config"])
    for folder in list(path.parents)[:3]:
        if (folder / "config.yaml").is_file():
            return OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=False)
    return {}


def sampling_scheduler(scheduler, lora):
    """The scheduler to sample with `lora` loaded: when it was trained with loss.zero_terminal_snr, the zero-SNR DDIM
    (and its v-prediction) that training and its validation grids used; else `scheduler` unchanged."""
    cfg = lora_training_config(lora)
    if not (cfg.get("loss") or {}).get("zero_terminal_snr") or scheduler.config.get("rescale_betas_zero_snr"):
        return scheduler
    prediction = (cfg.get("model") or {}).get("prediction_type")
    return zero_terminal_snr_scheduler(scheduler.config, **({"prediction_type": prediction} if prediction else {}))
