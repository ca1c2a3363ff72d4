"""Prior preservation from the base model's own prediction (OneTrainer's "prior prediction", ai-toolkit's differential
output preservation): no class images. Each step, the instance samples' noisy latents are also denoised under the class
prompt twice: with the trained adapter off (the target, no grad) and on; their MSE is the prior loss.

Any peft adapter kind (LoRA, LoCon, DoRA, LoHa, LoKr, OFT): peft switches each off the same way. "Base" means the
model without the adapter this phase trains: a stacked, frozen adapter of an earlier phase stays on
(it is part of what this phase starts from), a merged one is in the weights anyway; a `continue` phase's target is the
model without the continued adapter, i.e. before the earlier phase too.

`prior.base_prediction_captions=true`: instead of one class prompt, each instance sample's own caption with the trigger
replaced by the class word (`sks, smiling` -> `dog, smiling`; `a sks dog` -> `a dog`), swapped on the token ids.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer

from sdft.adapters.kinds import is_peft_kind
from sdft.adapters.lora import ADAPTER_NAME
from sdft.config import AdapterKind
from sdft.errors import ConfigError
from sdft.models.params import text_towers


def base_prior_prompt(cfg) -> str:
    """prior.base_prediction_prompt, else data.class_prompt, else the concepts' one class prompt (`cfg`: the run)."""
    if cfg.prior.base_prediction_prompt:
        return cfg.prior.base_prediction_prompt
    if cfg.data.class_prompt:
        return cfg.data.class_prompt
    prompts = {c.class_prompt for c in cfg.data.concepts if c.class_prompt and not c.is_reg}
    if len(prompts) == 1:
        return prompts.pop()
    raise ConfigError(
        "prior.base_prediction needs a class prompt: set data.class_prompt or "
        "prior.base_prediction_prompt (e.g. 'photo of a person')."
    )


def trigger_and_class_word(cfg) -> tuple[str, str]:
    """The trigger (data.trigger, else the concepts' one trigger, else the instance prompt's word the class prompt
    lacks) and the class word (prior.base_prediction_class_word, else the class prompt's last word)."""

    triggers = {c.trigger for c in cfg.data.concepts if c.trigger and not c.is_reg}
    trigger = cfg.data.trigger or (triggers.pop() if len(triggers) == 1 else None)
    from sdft.data.captions import subject_words

    try:
        return subject_words(
            cfg.data.instance_prompt, base_prior_prompt(cfg), trigger, class_noun=cfg.prior.base_prediction_class_word
        )
    except ConfigError:
        raise ConfigError(
            "prior.base_prediction_captions=true needs the trigger and the class word to swap: set "
            "data.trigger=<word> and prior.base_prediction_class_word=<word>."
        ) from None


def check_base_prior(cfg) -> None:
    if not cfg.prior.base_prediction:
        return
    if not is_peft_kind(cfg.adapter.kind):
        raise ConfigError(
            f"prior.base_prediction=true needs an adapter it can switch off for the base model's prediction: "
            f"adapter.kind=lora, locon, loha, lokr, dora or oft. adapter.kind={AdapterKind(cfg.adapter.kind).value} "
            "trains "
            + ("the U-Net's own weights" if cfg.adapter.kind == AdapterKind.full else "only a token's embedding")
            + ", so there is no adapter to switch off: use prior=default (class images)."
        )
    base_prior_prompt(cfg)
    if cfg.prior.base_prediction_captions:
        if cfg.data.cache_text_encoder_outputs:
            raise ConfigError(
                "prior.base_prediction_captions=true swaps words in the captions' token ids, which "
                "cached text-encoder outputs no longer have: set data.cache_text_encoder_outputs=false."
            )
        trigger_and_class_word(cfg)


class CaptionSwap:
    """Token ids of captions -> the same captions with the trigger replaced by the class word (dropped where the class
    word follows it already), re-padded. On ids, not text: the batch holds ids, and CLIP's BPE splits at words, so a
    whole word's ids are the same inside a caption as alone."""

    def __init__(self, tokenizer, trigger: str, class_word: str):
        self.trigger = tokenizer(trigger, add_special_tokens=False).input_ids
        self.cls = tokenizer(class_word, add_special_tokens=False).input_ids
        self.eos, self.pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        length, t, rows = input_ids.shape[1], len(self.trigger), []
        for row in input_ids.tolist():
            end = row.index(self.eos, 1) if self.eos in row[1:] else len(row)
            body, out, i = row[1:end], [], 0
            while i < len(body):
                if body[i : i + t] == self.trigger:
                    i += t
                    if body[i : i + len(self.cls)] != self.cls:
                        out += self.cls
                else:
                    out.append(body[i])
                    i += 1
            ids = [row[0], *out][: length - 1] + [self.eos]
            rows.append(ids + [self.pad] * (length - len(ids)))
        return torch.tensor(rows, dtype=input_ids.dtype, device=input_ids.device)


class PairCaptionSwap:
    """SDXL's pair ids (B, 2, 77): each tower's ids swapped with its own tokenizer (their pad ids differ)."""

    def __init__(self, tokenizer, tokenizer_2, trigger: str, class_word: str):
        self.swaps = (CaptionSwap(tokenizer, trigger, class_word), CaptionSwap(tokenizer_2, trigger, class_word))

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([swap(input_ids[:, k]) for k, swap in enumerate(self.swaps)], dim=1)


def caption_swap(cfg, tokenizer, tokenizer_2=None) -> CaptionSwap | PairCaptionSwap | None:
    """The per-caption swap when prior.base_prediction_captions is on, else None (one class prompt); with SDXL's
    second tokenizer, one swap per tower."""
    if not cfg.prior.base_prediction_captions:
        return None
    if tokenizer_2 is not None:
        return PairCaptionSwap(tokenizer, tokenizer_2, *trigger_and_class_word(cfg))
    return CaptionSwap(tokenizer, *trigger_and_class_word(cfg))


@contextlib.contextmanager
def trained_adapter_off(*models: torch.nn.Module):
    """Inside: the adapter being trained (peft's ADAPTER_NAME) is inactive; other (stacked) adapters stay active.
    Any peft tuner (LoRA, LoCon, DoRA, LoHa, LoKr, OFT): each layer then computes its base layer plus the adapters
    left active, exactly. peft's set_adapter also sets requires_grad, so every tuner parameter's flag is put back
    afterwards."""
    layers = [m for model in models for m in model.modules() if isinstance(m, BaseTunerLayer)]
    before = [list(layer.active_adapters) for layer in layers]
    flags = {p: p.requires_grad for layer in layers for p in layer.parameters()}
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
    """The class prompt's token ids (1, 77) (SDXL: both towers', (1, 2, 77)), or the per-caption swap, and the prior
    loss's weight; `loss` runs the two extra U-Net passes."""

    def __init__(self, input_ids: torch.Tensor, weight: float, swap: CaptionSwap | PairCaptionSwap | None = None):
        self.input_ids, self.weight, self.swap = input_ids, weight, swap

    def loss(
        self,
        module,
        latents: torch.Tensor,
        input_noise: torch.Tensor,
        timesteps: torch.Tensor,
        captions: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """MSE between the adapted and the base prediction at the same noisy latents, under the class prompt (with
        the swap: under each sample's caption `captions` with its trigger replaced by the class word). SDXL: both
        passes get the samples' own size/crop `time_ids` (as the step), and the towers' adapters are off too."""
        if self.swap is not None and captions is not None:
            ids = self.swap(captions).to(latents.device)
        else:
            ids = self.input_ids.to(latents.device).expand(latents.shape[0], *self.input_ids.shape[1:])
        towers = text_towers(module)
        with torch.no_grad(), trained_adapter_off(module.unet, *towers):
            target = module.predict(latents, input_noise, timesteps, ids, time_ids=time_ids)[0]
        pred = module.predict(latents, input_noise, timesteps, ids, time_ids=time_ids)[0]
        return F.mse_loss(pred, target)
