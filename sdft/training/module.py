"""The LightningModule: one diffusion training step for DreamBooth / LoRA, with prior preservation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.optimization import get_scheduler
from diffusers.training_utils import compute_snr

from sdft.config import LossConfig, OptimConfig
from sdft.errors import ConfigError, NonFiniteLossError
from sdft.training.losses import mask_weights, per_sample_loss
from sdft.families.sd1 import Sd1Conditioning
from sdft.models.params import named_text_towers, text_towers
from sdft.models.text import text_states
from sdft.training.noise import perturb, sample_noise, sample_timesteps, timestep_range
from sdft.training.optimizers import build_optimizer, learning_rates, optimizer_node, set_mode, split_groups


@dataclass
class StepModels:
    """What one training step runs: the family's models and scheduler (sdft/models/family_parts.py), the trained
    token vectors (sdft.embeddings.TokenVectors) if any, and the text encoder's clip_skip (model.clip_skip)."""

    unet: Any
    text_encoder: Any
    vae: Any
    noise_scheduler: Any
    text_encoder_2: Any = None  # SDXL's second text tower
    conditioning: Any = None  # the family's part of the step (models/conditioning.py); None: SD 1.x's
    embeddings: Any = None
    clip_skip: int = 1


class DreamBoothModule(L.LightningModule):
    """Wraps U-Net, text encoder and VAE; trains whatever parameters require grad."""

    def __init__(
        self,
        models: StepModels,
        optim: OptimConfig,
        loss: LossConfig,
        *,
        prior_loss_weight: float = 1.0,
        train_text_encoder: bool = False,
        base_prior=None,
    ):
        super().__init__()
        self.unet, self.text_encoder, self.vae = models.unet, models.text_encoder, models.vae
        self.text_encoder_2 = models.text_encoder_2  # SDXL's second text tower, else None
        self.conditioning = models.conditioning or Sd1Conditioning()  # the family's step part (families/base.py)
        self.noise_scheduler = noise_scheduler = models.noise_scheduler
        self.optim_cfg, self.loss_cfg = optim, loss
        self.prior_loss_weight = prior_loss_weight
        self.train_text_encoder = train_text_encoder
        self.clip_skip = models.clip_skip
        self.vae_scale = self.vae.config.scaling_factor
        self.embeddings = (
            models.embeddings
        )  # sdft.embeddings.TokenVectors: new prompt tokens' vectors (own param group)
        self.strict_loading = False  # checkpoints hold only the trained weights (on_save_checkpoint)
        self.base_prior = base_prior  # sdft/training/prior_prediction.py: the base model's prediction as the prior
        timestep_range(loss, noise_scheduler.config.num_train_timesteps)  # a bad range fails here, not at step 1

    # -- modes: trained parts train, frozen parts stay in eval --
    def on_fit_start(self) -> None:
        self.train()  # Lightning 2.6 does not switch modes at fit start; models come out of diffusers in eval
        # diffusers' ModelMixin.dtype walks every submodule (~4 ms for a U-Net): read it once, not every step
        self._unet_dtype, self._vae_dtype = self.unet.dtype, self.vae.dtype

    @property
    def unet_dtype(self) -> torch.dtype:
        return getattr(self, "_unet_dtype", None) or self.unet.dtype

    @property
    def vae_dtype(self) -> torch.dtype:
        return getattr(self, "_vae_dtype", None) or self.vae.dtype

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()
        for tower in text_towers(self):
            tower.train(mode and self.train_text_encoder)
        return self

    # -- the step --
    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(self.train_text_encoder and torch.is_grad_enabled()):
            return text_states(self.text_encoder, input_ids, self.clip_skip)

    def encode_latents(self, pixels: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """VAE latents (times the scaling factor), fp32; `sample=False` takes the distribution's mean."""
        with torch.no_grad():
            dist = self.vae.encode(pixels.to(self.vae_dtype)).latent_dist
            return (dist.sample() if sample else dist.mode()).float() * self.vae_scale

    def predict(
        self,
        latents: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        input_ids: torch.Tensor,
        input_noise: torch.Tensor | None = None,
        *,
        time_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The U-Net's prediction and its target (noise or velocity); `input_ids`: token ids or the family's encoded
        text (`self.conditioning.encode`); `input_noise` (default: `noise`) noises the input; `time_ids`: SDXL's
        per-sample size/crop ids."""
        noisy = self.noise_scheduler.add_noise(latents, noise if input_noise is None else input_noise, timesteps)
        text, added = self.conditioning.unet_inputs(self, input_ids, latents, time_ids)  # SD1: (text states, None)
        kwargs = {} if added is None else {"added_cond_kwargs": {k: v.to(self.unet_dtype) for k, v in added.items()}}
        pred = self.unet(noisy.to(self.unet_dtype), timesteps, text.to(self.unet_dtype), **kwargs).sample.float()
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        return pred, target

    def loss_at(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, input_ids: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample MSE (B,) of the U-Net's prediction at the given noise and timesteps (whatever loss.kind is)."""
        pred, target = self.predict(latents, noise, timesteps, input_ids)
        return F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))

    def diffusion_loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample loss (B,) at random noise and timesteps, and the timesteps used."""
        if "latent_dist" in batch:  # cached by the data module: the VAE encoder's mean and log-variance
            with torch.no_grad():
                dist = DiagonalGaussianDistribution(batch["latent_dist"].to(self.vae_dtype))
                latents = dist.sample().float() * self.vae_scale
        else:
            latents = self.encode_latents(batch["pixel_values"])
        latents = latents.contiguous()  # the noise's layout follows the latents'; the VAE may return another layout
        noise = sample_noise(latents, self.loss_cfg)  # sdft/training/noise.py: offset, pyramid
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = sample_timesteps(latents.shape[0], steps, self.loss_cfg, latents.device)
        text = self.conditioning.batch_text(batch)  # cached encoded text (sdft/data/cache.py), else token ids
        input_noise = perturb(noise, self.loss_cfg)
        if self.base_prior is not None:  # training_step reuses them for the base-prediction prior
            self.step_inputs = (latents, input_noise, timesteps)
        extra = {"time_ids": batch["time_ids"]} if "time_ids" in batch else {}  # SDXL: per-sample size/crop ids
        pred, target = self.predict(latents, noise, timesteps, text, input_noise, **extra)
        weight = None
        if "mask" in batch and self.loss_cfg.masked_loss:  # sdft/data/masks.py
            weight = mask_weights(batch["mask"], latents, self.loss_cfg.unmasked_weight)
        return per_sample_loss(pred, target, timesteps, self.noise_scheduler, self.loss_cfg, weight), timesteps

    def snr_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """min-SNR-gamma loss weights (Hang et al. 2023), via diffusers' compute_snr."""
        snr = compute_snr(self.noise_scheduler, timesteps)
        clipped = torch.clamp(snr, max=self.loss_cfg.min_snr_gamma)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            return clipped / (snr + 1)
        return clipped / snr

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        per_sample, timesteps = self.diffusion_loss(batch)
        if self.loss_cfg.min_snr_gamma:
            per_sample = per_sample * self.snr_weights(timesteps)
        if "loss_weight" in batch:  # per-concept loss weights (1 for class samples)
            per_sample = per_sample * batch["loss_weight"].to(per_sample)
        # instance samples first, class samples after; n_instance is a plain int (sdft/data/dataset.py): no device sync
        n = batch["n_instance"] if "n_instance" in batch else int((~batch["is_prior"]).sum())
        instance_loss = per_sample[:n].mean()
        loss = instance_loss
        self.log("train/instance_loss", instance_loss, prog_bar=False, batch_size=n)
        if n < per_sample.shape[0]:
            prior_loss = per_sample[n:].mean()
            loss = instance_loss + self.prior_loss_weight * prior_loss
            self.log("train/prior_loss", prior_loss, batch_size=n)
        if self.base_prior is not None:  # instance samples under the class prompt vs the base model's prediction
            captions = batch["input_ids"][:n] if "input_ids" in batch else None  # per-caption prompts
            time_ids = batch["time_ids"][:n] if "time_ids" in batch else None  # SDXL: the samples' size/crop ids
            base_loss = self.base_prior.loss(self, *(x[:n] for x in self.step_inputs), captions, time_ids)
            loss = loss + self.base_prior.weight * base_loss
            self.log("train/base_prior_loss", base_loss, batch_size=n)
        every = max(self.loss_cfg.finite_check_every_n_steps, 1)
        if self.global_step % every == 0 and not torch.isfinite(loss):  # the only host sync of the step
            where = "Nothing was updated by this step" if every == 1 else f"It is checked every {every} steps"
            peak = max(float(p.detach().abs().max()) for p in self.parameters() if p.requires_grad)
            raise NonFiniteLossError(  # honest about the weights: finite is not the same as usable (issue 20)
                f"Loss is {loss.item()} at step {self.global_step}. {where}; the trained weights now reach "
                f"|w| = {peak:.3g}{' (exploded)' if peak > 1e4 else ''}. A saved checkpoint holds its own step's "
                "weights, which may already be bad if the loss was climbing: check train/loss and resume from one "
                "taken before. Lower optim.lr, keep trainer.gradient_clip_val set, or use trainer.precision="
                "32-true / bf16-mixed instead of 16-mixed."
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    # schedule-free optimizers: steps in train mode; between steps (saves, grids, the end) in eval mode
    def on_train_batch_start(self, batch, batch_idx) -> None:
        set_mode(self.optimizers(), train=True)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        set_mode(self.optimizers(), train=False)

    def on_before_optimizer_step(self, optimizer) -> None:
        """train/grad_norm (before clipping) at log intervals only: computing it every step would cost a reduction."""
        if self.trainer.global_step % max(self.trainer.log_every_n_steps, 1):
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            self.log("train/grad_norm", norm, batch_size=1)

    # -- checkpoints: trained weights only (a LoRA checkpoint is megabytes, not the whole base model) --
    def trained_names(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = self.trained_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        missing = sorted(self.trained_names() - set(checkpoint["state_dict"]))
        if missing:
            raise ConfigError(
                f"The checkpoint does not hold {len(missing)} of the weights this run trains (e.g. {missing[0]}): it "
                "was written by a run with another adapter config. Resume with the run's own config, or start anew."
            )

    # -- optimizer --
    def param_groups(self) -> list[dict]:
        groups, lrs = [], learning_rates(self.optim_cfg)
        for name, model in [("unet", self.unet), *named_text_towers(self)]:  # each text tower its own group
            params = [p for p in model.parameters() if p.requires_grad]
            if params:
                groups.append({"params": params, "lr": lrs[name], "name": name})
        if self.embeddings is not None and self.embeddings.vectors.requires_grad:
            # no weight decay: it would pull the vectors towards 0, away from where CLIP's token embeddings live
            vectors = list(self.embeddings.parameters())  # SDXL: both towers' vectors
            groups.append({"params": vectors, "lr": lrs["embedding"], "weight_decay": 0.0, "name": "embedding"})
        if not groups:
            raise ConfigError("No parameter requires grad: check the adapter config.")
        return groups

    def configure_optimizers(self):
        cfg = self.optim_cfg
        groups = split_groups(self.param_groups(), self.named_parameters(), self.unet, cfg)  # LoRA+, per-block lr
        on_gpu = all(p.is_cuda for g in groups for p in g["params"])
        optimizer = build_optimizer(optimizer_node(cfg, on_gpu), groups, cfg.lr)  # sdft/training/optimizers.py
        total = max(int(self.trainer.max_steps), 1) if self.trainer else 1
        scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
