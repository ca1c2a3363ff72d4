"""The metrics: DreamBooth's DINO, CLIP-I, CLIP-T, PRES, DIV on feature vectors, and two that need no feature model:
instance fidelity (fixed-noise denoising loss) and language drift (base vs fine-tuned predictions on class prompts).

Feature arguments are L2-normalised embeddings (N, D), so a dot product is a cosine similarity.
"""

from __future__ import annotations


import torch

from sdft.training.fixed_noise import TIMESTEPS, FixedNoiseMeter
from sdft.models.text import text_states

DRIFT_SEED = 4242


def mean_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs (a_i, b_j): DINO and CLIP-I (generated vs real), PRES."""
    return float((a @ b.T).mean())


def mean_self_similarity(a: torch.Tensor) -> float:
    """Mean cosine similarity over pairs i != j of one set (real vs real: the paper's 'real images' row)."""
    n = a.shape[0]
    if n < 2:
        return float("nan")
    sims = a @ a.T
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


def clip_t(image_features: torch.Tensor, text_features: torch.Tensor) -> float:
    """CLIP-T: mean cosine similarity of each image with its own prompt (rows aligned)."""
    return float((image_features * text_features).sum(dim=-1).mean())


def diversity(groups: list[torch.Tensor]) -> float:
    """DIV: 1 - mean similarity between different images of the same prompt, averaged over prompts (with >= 2)."""
    values = [1.0 - mean_self_similarity(g) for g in groups if g.shape[0] >= 2]
    return sum(values) / len(values) if values else float("nan")


# -- model-based metrics ----------------------------------------------------------------------------------------


def _module(pipe, noise_scheduler, clip_skip: int):
    """The training LightningModule around a pipeline's models (eval mode), for the fixed-noise loss."""
    from sdft.config import LossConfig, OptimConfig
    from sdft.training.module import DreamBoothModule, StepModels

    models = StepModels(pipe.unet, pipe.text_encoder, pipe.vae, noise_scheduler, clip_skip=clip_skip)
    module = DreamBoothModule(models, OptimConfig(), LossConfig())
    return module.to(pipe.unet.device).eval()


def instance_fidelity(
    pipe,
    noise_scheduler,
    instances: list,
    tokenizer,
    resolution: int,
    seed: int = 1234,
    clip_skip: int = 1,
    max_images: int = 8,
) -> float:
    """The diffusion loss on the instance images with their training prompts, at fixed noise and timesteps: the
    same measurement as the run's `val/fixed_noise_loss` (FixedNoiseLoss); lower = the subject is reproduced better."""
    meter = FixedNoiseMeter(resolution, max_images=max_images, seed=seed)
    return meter.measure(_module(pipe, noise_scheduler, clip_skip), instances, tokenizer)


@torch.no_grad()
def eps_predictions(
    pipe,
    noise_scheduler,
    prompts: list[str],
    resolution: int,
    seed: int = DRIFT_SEED,
    timesteps: tuple[int, ...] = TIMESTEPS,
    clip_skip: int = 1,
) -> torch.Tensor:
    """The U-Net's predictions (P, T, C, h, w) for each prompt at fixed seeded latents, noise and timesteps."""
    unet, device = pipe.unet, pipe.unet.device
    tokens = pipe.tokenizer(
        prompts, padding="max_length", truncation=True, max_length=pipe.tokenizer.model_max_length, return_tensors="pt"
    ).input_ids.to(device)
    states = text_states(pipe.text_encoder, tokens, clip_skip).to(unet.dtype)
    side = resolution // pipe.vae_scale_factor
    gen = torch.Generator("cpu").manual_seed(seed)
    shape = (len(prompts), unet.config.in_channels, side, side)
    latents = torch.randn(shape, generator=gen)
    out = []
    for t in timesteps:
        noise = torch.randn(shape, generator=gen)
        step = torch.full((len(prompts),), t, dtype=torch.long)
        noisy = noise_scheduler.add_noise(latents, noise, step).to(device, unet.dtype)
        out.append(unet(noisy, step.to(device), states).sample.float().cpu())
    return torch.stack(out, dim=1)


def language_drift(tuned: torch.Tensor, base: torch.Tensor) -> float:
    """Mean squared difference of two `eps_predictions`: 0 when the fine-tune leaves class prompts untouched."""
    return float(((tuned - base) ** 2).mean())
