"""Prior preservation from the base model's own prediction (OneTrainer's "prior prediction", ai-toolkit's differential
output preservation): no class images. Each step, the instance samples' noisy latents are also denoised under the class
prompt twice: with the trained adapter off (the target, no grad) and on; their MSE is the prior loss.

"Base" means the model without the adapter this phase trains: a stacked, frozen adapter of an earlier phase stays on
(it is part of what this phase starts from), a merged one is in the weights anyway; a `continue` phase's target is the
model without the continued adapter, i.e. before the earlier phase too.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer

from sdft.adapters.lora import ADAPTER_NAME
from sdft.errors import ConfigError


def base_prior_prompt(cfg) -> str:
    """prior.base_prediction_prompt, else data.class_prompt, else the concepts' one class prompt (`cfg`: the run)."""
    if cfg.prior.base_prediction_prompt:
        return cfg.prior.base_prediction_prompt
    if cfg.data.class_prompt:
        return cfg.data.class_prompt
    prompts = {c.class_prompt for c in cfg.data.concepts if c.class_prompt and not c.is_reg}
    if len(prompts) == 1:
        return prompts.pop()
    raise ConfigError("prior.base_prediction needs a class prompt: set data.class_prompt or "
                      "prior.base_prediction_prompt (e.g. 'photo of a person').")


def check_base_prior(cfg) -> None:
    if not cfg.prior.base_prediction:
        return
    if cfg.adapter.kind != "lora":
        raise ConfigError("prior.base_prediction=true needs a LoRA (adapter.kind=lora): full fine-tuning has no "
                          "adapter to switch off for the base model's prediction. Use prior=default (class images).")
    base_prior_prompt(cfg)


@contextlib.contextmanager
def trained_adapter_off(*models: torch.nn.Module):
    """Inside: the adapter being trained (peft's ADAPTER_NAME) is inactive; other (stacked) adapters stay active.
    peft's set_adapter also sets requires_grad, so every LoRA parameter's flag is put back afterwards."""
    layers = [m for model in models for m in model.modules() if isinstance(m, BaseTunerLayer)]
    before = [list(layer.active_adapters) for layer in layers]
    flags = {p: p.requires_grad for model in models for n, p in model.named_parameters() if "lora_" in n}
    try:
        for layer, active in zip(layers, before):
            layer.set_adapter([a for a in active if a != ADAPTER_NAME])
        yield
    finally:
        for layer, active in zip(layers, before):
            layer.set_adapter(active)
        for p, flag in flags.items():
            p.requires_grad_(flag)


class BasePrior:
    """The class prompt's token ids and the prior loss's weight; `loss` runs the two extra U-Net passes."""

    def __init__(self, input_ids: torch.Tensor, weight: float):
        self.input_ids, self.weight = input_ids, weight

    def loss(self, module, latents: torch.Tensor, input_noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """MSE between the adapted and the base prediction at the same noisy latents, under the class prompt."""
        ids = self.input_ids.to(latents.device).expand(latents.shape[0], -1)
        with torch.no_grad(), trained_adapter_off(module.unet, module.text_encoder):
            target = module.predict(latents, input_noise, timesteps, ids)[0]
        pred = module.predict(latents, input_noise, timesteps, ids)[0]
        return F.mse_loss(pred, target)
