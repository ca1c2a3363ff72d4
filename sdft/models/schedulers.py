"""Scheduler builders shared by training and generation."""

from __future__ import annotations

from diffusers import DDIMScheduler


def zero_terminal_snr_scheduler(config, **overrides) -> DDIMScheduler:
    """DDIM from a scheduler config with rescaled zero-SNR betas and "trailing" spacing (Lin et al. 2023)."""
    return DDIMScheduler.from_config(
        config, rescale_betas_zero_snr=True, clip_sample=False, timestep_spacing="trailing", **overrides
    )
