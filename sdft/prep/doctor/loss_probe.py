"""`--loss-probe N` (OneTrainer's idea): train N steps, then each image's loss at fixed noise and timesteps; images
whose loss stands out from the set (robust z-score: distance from the median in median absolute deviations) are named.

The run is the framework's own (sdft.run.wiring.prepare + fit, the run config's model; the tiny offline one when the dataset
came without a config), written under the report folder; the loss is the module's `loss_at`, as in
val/fixed_noise_loss (sdft/callbacks/fixed_noise_loss.py), per image instead of averaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from sdft.training.fixed_noise import TIMESTEPS
from sdft.data.images import load_rgb, resize_crop, to_tensor
from sdft.prep.doctor.findings import Finding, Severity

OUTLIER_Z = 3.5  # robust z-score (0.6745 (x - median) / MAD) beyond which an image's loss is named


@torch.no_grad()
def per_image_loss(module, tokenizer, examples, resolution: int, seed: int = 1234) -> list[float]:
    """Each example's mean loss over TIMESTEPS at seeded noise (centre crop at `resolution`)."""
    module.eval()
    losses = []
    gen = torch.Generator("cpu").manual_seed(seed)
    for e in examples:
        pixels = to_tensor(resize_crop(load_rgb(e.path), resolution, True))[None].to(module.device)
        ids = tokenizer(
            [e.prompt],
            padding="max_length",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids.to(module.device)
        latents = module.encode_latents(pixels, sample=False)
        text = module.conditioning.encode(module, ids)
        values = []
        for t in TIMESTEPS:
            noise = torch.randn(latents.shape, generator=gen).to(latents.device)
            values.append(float(module.loss_at(latents, noise, torch.full((1,), t, dtype=torch.long), text)[0]))
        losses.append(float(np.mean(values)))
    return losses


def outliers(losses: dict[Path, float], z: float = OUTLIER_Z) -> dict[Path, float]:
    """{image: robust z-score} of the images beyond `z` (higher loss than the set: hard or unlike the others)."""
    values = np.array(list(losses.values()))
    median = float(np.median(values))
    # a floor of 5 % of the median: when most losses are equal (MAD ~ 0) a tiny difference is not an outlier
    mad = max(float(np.median(np.abs(values - median))), 0.05 * abs(median), 1e-12)
    scores = {p: 0.6745 * (v - median) / mad for p, v in losses.items()}
    return {p: s for p, s in scores.items() if s > z}


def probe(cfg, datasets, steps: int, out: Path, data_overrides: list[str] | None = None) -> list[Finding]:
    """Train `steps` steps on the first dataset and return a finding per outlier image (and one with every loss)."""
    from sdft.config import SdftConfig
    from sdft.run.train import as_config, checked_phases, fit
    from sdft.run.wiring import prepare

    if cfg is None:
        cfg = OmegaConf.structured(SdftConfig(name="loss_probe"))
        cfg.model.path = "tiny"
        cfg.data = datasets[0].settings
    cfg = as_config(cfg)
    cfg.output_dir = str(out)
    cfg.trainer.max_steps = steps
    cfg.trainer.enable_progress_bar = False
    cfg.callbacks.validation_seeds = []  # no grids
    cfg.callbacks.fixed_noise_loss = False
    cfg.logger.kind = "none"
    cfg.phases = []  # the run config's main phase, on its data
    (phase,), (data,) = checked_phases(cfg)
    parts = prepare(phase, data)
    fit(parts)
    examples = parts.datamodule.instances
    values = per_image_loss(parts.module, parts.datamodule.tokenizer, examples, parts.cfg.data.resolution)
    losses = {e.path: v for e, v in zip(examples, values)}
    findings = [
        Finding(
            "loss probe",
            Severity.info,
            f"per-image loss after {steps} steps at fixed noise: median {np.median(values):.4f}, "
            f"range {min(values):.4f}-{max(values):.4f}",
            "images far above the others are hard to learn or unlike the rest: look at them first",
            [],
            {"losses": {str(p): round(v, 5) for p, v in losses.items()}},
        )
    ]
    for path, score in sorted(outliers(losses).items(), key=lambda kv: -kv[1]):
        findings.append(
            Finding(
                "loss probe",
                Severity.warn,
                f"{path.name}: loss {losses[path]:.4f} stands out (robust z {score:.1f}; median {np.median(values):.4f})",
                "check it: a different subject, an odd crop, heavy noise or text in the image",
                [path],
                {"loss": round(losses[path], 5), "z": round(score, 2)},
            )
        )
    return findings
