"""The per-sample diffusion loss: L2 / L1 / (pseudo-)Huber / smooth-L1 with a timestep schedule, and debiased
estimation. Formulas as kohya sd-scripts (train_util.conditional_loss, get_huber_threshold_if_needed,
custom_train_functions.apply_debiased_estimation): no library ships them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr

from sdft.config import HuberSchedule, LossConfig, LossKind


def huber_threshold(timesteps: torch.Tensor, noise_scheduler, c: float, schedule: HuberSchedule) -> torch.Tensor:
    """Per-sample Huber threshold (B,): constant c; exponential from 1 at t=0 to c at t=T; snr: c + (1-c)/(1+sigma)^2,
    near 1 (L2-like) at low noise and near c (L1-like) at high noise."""
    if schedule == HuberSchedule.constant:
        return torch.full(timesteps.shape, c, device=timesteps.device)
    if schedule == HuberSchedule.exponential:
        alpha = -math.log(c) / noise_scheduler.config.num_train_timesteps
        return torch.exp(-alpha * timesteps.float())
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    sigmas = ((1.0 - alphas_cumprod) / alphas_cumprod) ** 0.5
    return (1 - c) / (1 + sigmas) ** 2 + c


def elementwise_loss(
    pred: torch.Tensor, target: torch.Tensor, kind: LossKind, huber_c: torch.Tensor | None = None
) -> torch.Tensor:
    """The loss per element (same shape as `pred`); huber_c (B,) for huber / smooth_l1."""
    if kind == LossKind.l2:
        return F.mse_loss(pred, target, reduction="none")
    if kind == LossKind.l1:
        return F.l1_loss(pred, target, reduction="none")
    c = huber_c.view(-1, *([1] * (pred.dim() - 1)))
    smooth = torch.sqrt((pred - target) ** 2 + c**2) - c
    return 2 * c * smooth if kind == LossKind.huber else 2 * smooth


def debiased_weights(timesteps: torch.Tensor, noise_scheduler) -> torch.Tensor:
    """Debiased estimation (Yu et al. 2024): 1/sqrt(SNR), or 1/(SNR+1) for v-prediction; SNR capped at 1000."""
    snr = compute_snr(noise_scheduler, timesteps).clamp(max=1000)
    if noise_scheduler.config.prediction_type == "v_prediction":
        return 1 / (snr + 1)
    return 1 / torch.sqrt(snr)


def mask_weights(mask: torch.Tensor, latents: torch.Tensor, unmasked_weight: float) -> torch.Tensor:
    """(B, 1, h, w) loss weights at the latents' size: the pixel mask area-averaged (each latent covers 8x8 pixels),
    1 inside, `unmasked_weight` outside."""
    m = F.interpolate(mask.to(latents), size=latents.shape[-2:], mode="area")
    return m + unmasked_weight * (1 - m)


def per_sample_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    timesteps: torch.Tensor,
    noise_scheduler,
    cfg: LossConfig,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The configured loss, averaged per sample (B,), debiased if asked (min-SNR stays in the module). `weight`
    (mask_weights): a weighted mean, so a small mask does not shrink the loss (kohya divides by all elements)."""
    huber_c = None
    if cfg.kind in (LossKind.huber, LossKind.smooth_l1):
        huber_c = huber_threshold(timesteps, noise_scheduler, cfg.huber_c, cfg.huber_schedule)
    dims = tuple(range(1, pred.dim()))
    loss = elementwise_loss(pred, target, cfg.kind, huber_c)
    if weight is None:
        loss = loss.mean(dim=dims)
    else:
        weight = weight.expand_as(loss)
        loss = (loss * weight).sum(dim=dims) / weight.sum(dim=dims).clamp_min(1e-8)
    if cfg.debiased_estimation:
        loss = loss * debiased_weights(timesteps, noise_scheduler)
    return loss
