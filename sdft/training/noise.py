"""The noise and timesteps of a training step: offset and pyramid noise, input perturbation, timestep range and
distribution, zero-terminal-SNR schedules. With LossConfig's defaults the random draws are exactly the plain step's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_density_for_timestep_sampling

from sdft.config import LossConfig, PredictionType, TimestepSampling
from sdft.errors import ConfigError
from sdft.models.schedulers import zero_terminal_snr_scheduler


def pyramid_noise(noise: torch.Tensor, iterations: int, discount: float) -> torch.Tensor:
    """Multi-resolution noise (Whitaker 2023, kohya's pyramid_noise_like): upsampled coarse noise added per level,
    scaled back to unit variance. The level sizes shrink by a random factor in [2, 4), drawn from torch's RNG (kohya
    uses Python's `random`; torch's is seeded and saved with the run)."""
    b, c, h, w = noise.shape
    out = noise.clone()
    for i in range(1, iterations + 1):
        r = float(torch.rand(())) * 2 + 2
        hn, wn = max(1, int(h / r**i)), max(1, int(w / r**i))
        coarse = torch.randn(b, c, hn, wn, device=noise.device, dtype=noise.dtype)
        out = out + F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False) * discount**i
        if hn == 1 or wn == 1:
            break
    return out / out.std()


def sample_noise(latents: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """Gaussian noise like `latents`, plus offset noise and pyramid noise when configured."""
    noise = torch.randn_like(latents)
    if cfg.noise_offset:
        noise = noise + cfg.noise_offset * torch.randn(latents.shape[0], latents.shape[1], 1, 1, device=latents.device)
    if cfg.pyramid_noise_iterations:
        noise = pyramid_noise(noise, cfg.pyramid_noise_iterations, cfg.pyramid_noise_discount)
    return noise


def perturb(noise: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """The noise the U-Net's input is made with: `noise` plus input_perturbation × fresh noise (Ning et al. 2023, as
    diffusers' train_text_to_image --input_perturbation); the loss target keeps `noise`."""
    if not cfg.input_perturbation:
        return noise
    return noise + cfg.input_perturbation * torch.randn_like(noise)


def timestep_range(cfg: LossConfig, num_train_timesteps: int) -> tuple[int, int]:
    """[low, high) of the trained timesteps; a ConfigError for an empty or out-of-range interval."""
    high = num_train_timesteps if cfg.max_timestep is None else cfg.max_timestep
    if not 0 <= cfg.min_timestep < high <= num_train_timesteps:
        raise ConfigError(
            f"loss.min_timestep={cfg.min_timestep}, loss.max_timestep={cfg.max_timestep}: need 0 <= min < max <= "
            f"{num_train_timesteps} (the scheduler's num_train_timesteps)."
        )
    return cfg.min_timestep, high


def sample_timesteps(n: int, num_train_timesteps: int, cfg: LossConfig, device) -> torch.Tensor:
    """`n` timesteps from [min_timestep, max_timestep): uniform, or the SD3 densities (diffusers'
    compute_density_for_timestep_sampling: logit_normal, mode) mapped onto that range."""
    low, high = timestep_range(cfg, num_train_timesteps)
    if cfg.timestep_sampling == TimestepSampling.uniform:
        return torch.randint(low, high, (n,), device=device).long()
    scheme = TimestepSampling(cfg.timestep_sampling).value
    u = compute_density_for_timestep_sampling(
        scheme, n, logit_mean=cfg.logit_mean, logit_std=cfg.logit_std, mode_scale=cfg.mode_scale, device=device
    )
    return (low + u * (high - low)).long().clamp(low, high - 1)


def check_zero_terminal_snr(cfg: LossConfig, prediction_type) -> None:
    if cfg.zero_terminal_snr and prediction_type != PredictionType.v_prediction:
        raise ConfigError(
            "loss.zero_terminal_snr=true needs v-prediction (at zero SNR the noise cannot be predicted from the "
            "input): add model.prediction_type=v_prediction."
        )


def use_zero_terminal_snr(pipe) -> None:
    """Give `pipe` a zero-terminal-SNR scheduler (Lin et al. 2023): DDIM with rescaled betas and "trailing" timestep
    spacing, so sampling starts at the last timestep. The training scheduler (make_noise_scheduler) and the
    validation grids are built from it; PNDM, the SD 1.x default, cannot rescale its betas."""
    if pipe.scheduler.config.get("rescale_betas_zero_snr"):
        return
    pipe.scheduler = zero_terminal_snr_scheduler(pipe.scheduler.config)
