"""Prior from the base model's own prediction (sdft/training/prior_prediction.py): zero for an untrained (zero-initialised)
LoRA, the stacked earlier adapter stays on in the target, no class images, clear errors."""

from __future__ import annotations

import pytest
import torch

from sdft.adapters.lora import ADAPTER_NAME, start_phase
from sdft.errors import ConfigError
from sdft.training.prior_prediction import trained_adapter_off
from sdft.run.train import run
from helpers.wiring import prepare_for_test

CLASS = "data.class_prompt=photo of a character"


def base_loss(module) -> torch.Tensor:
    ids = module.base_prior.input_ids.expand(2, -1)
    batch = {"pixel_values": torch.rand(2, 3, 64, 64) * 2 - 1, "input_ids": ids}
    torch.manual_seed(0)
    module.diffusion_loss(batch)
    return module.base_prior.loss(module, *module.step_inputs)


def randomise(model, adapter: str = ADAPTER_NAME) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if f".lora_B.{adapter}." in name:
                p.normal_(0, 0.5)


def test_zero_initialised_lora_gives_zero_prior_loss(fast_config):
    module = prepare_for_test(fast_config("prior=base_prediction", CLASS)).module
    flags = {n: p.requires_grad for n, p in module.named_parameters()}
    assert float(base_loss(module)) == 0.0
    assert {n: p.requires_grad for n, p in module.named_parameters()} == flags, "requires_grad not restored"
    randomise(module.unet)
    assert float(base_loss(module)) > 1e-6  # a trained adapter does move away from the base
    assert {n: p.requires_grad for n, p in module.named_parameters()} == flags


def test_a_stacked_adapter_stays_on_in_the_target(fast_config):
    parts = prepare_for_test(fast_config("prior=base_prediction", CLASS))
    module, cfg = parts.module, parts.cfg
    randomise(module.unet)  # "face" phase's trained adapter ...
    start_phase(module.unet, module.text_encoder, cfg.adapter, "stack", "face")  # ... frozen; a new zero one on top
    assert float(base_loss(module)) == 0.0  # the target includes the stacked adapter: the new one is still zero
    x = torch.randn(1, 4, 8, 8)
    text = module.encode_text(module.base_prior.input_ids)
    with torch.no_grad():
        on = module.unet(x, torch.tensor([500]), text).sample
        with trained_adapter_off(module.unet, module.text_encoder):
            off_default = module.unet(x, torch.tensor([500]), text).sample
        module.unet.disable_adapters()
        bare = module.unet(x, torch.tensor([500]), text).sample
        module.unet.enable_adapters()
    assert torch.equal(on, off_default) and not torch.allclose(on, bare), "the stacked adapter changes nothing"


def test_base_prediction_prior_trains_without_class_images(fast_config, tmp_path):
    summary = run(fast_config("prior=base_prediction", CLASS, "callbacks.validation_seeds=[]"))
    assert summary["class_images"] == 0 and not (tmp_path / "class").exists()
    assert "train/base_prior_loss" in summary["final_metrics"]
    assert summary["final_metrics"]["train/loss"] > summary["final_metrics"]["train/instance_loss"] - 1e-9


def test_base_prediction_prior_errors(fast_config):
    with pytest.raises(
        ConfigError, match=r"lora, locon, loha, lokr, dora or oft\. adapter\.kind=full trains the U-Net"
    ):
        run(fast_config("prior=base_prediction", CLASS, "adapter=full"))
    with pytest.raises(ConfigError, match="needs a class prompt"):
        run(fast_config("prior=base_prediction", "data.class_prompt=null"))


@pytest.mark.parametrize("kind", ["locon", "loha", "lokr", "dora", "oft"])
def test_every_peft_kind_switches_off_to_the_exact_base(kind, fast_config):
    """Issue 33 item 8: LoCon/LoHa/LoKr/DoRA/OFT are switched off as LoRA is (peft's set_adapter): the target is the
    bare model's prediction bit for bit, a trained adapter gives a prior loss, and requires_grad is put back."""
    extra = ["adapter.oft_block_size=8"] if kind == "oft" else ["adapter.conv_rank=2"]
    module = prepare_for_test(fast_config("prior=base_prediction", CLASS, f"adapter.kind={kind}", *extra)).module
    with torch.no_grad():  # move every trained tensor away from its (identity) start
        for p in module.unet.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn_like(p))
    flags = {n: p.requires_grad for n, p in module.named_parameters()}
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    text = module.encode_text(module.base_prior.input_ids)
    with torch.no_grad():
        on = module.unet(x, t, text).sample
        with trained_adapter_off(module.unet, module.text_encoder):
            off = module.unet(x, t, text).sample
        module.unet.disable_adapters()  # diffusers': every adapter of every tuner layer off
        bare = module.unet(x, t, text).sample
        module.unet.enable_adapters()
    assert torch.equal(off, bare) and not torch.allclose(on, bare), kind
    assert float(base_loss(module)) > 1e-6
    assert {n: p.requires_grad for n, p in module.named_parameters()} == flags, "requires_grad not restored"


def test_base_prediction_prior_trains_a_loha(fast_config):
    summary = run(fast_config("prior=base_prediction", CLASS, "adapter.kind=loha", "callbacks.validation_seeds=[]"))
    assert summary["class_images"] == 0 and "train/base_prior_loss" in summary["final_metrics"]


CAPTIONS = [
    "prior=base_prediction",
    CLASS,
    "prior.base_prediction_captions=true",
    "data.instance_prompt=photo of sks character",
]


def test_per_caption_prompts_swap_the_trigger_for_the_class_word(fast_config):
    parts = prepare_for_test(fast_config(*CAPTIONS))
    tok, swap = parts.pipe.tokenizer, parts.module.base_prior.swap

    def ids(*texts):
        return tok(
            list(texts), padding="max_length", truncation=True, max_length=tok.model_max_length, return_tensors="pt"
        ).input_ids

    got = swap(ids("photo of sks character, smiling", "sks, on a beach", "a photo"))
    assert torch.equal(got, ids("photo of character, smiling", "character, on a beach", "a photo"))
    module = parts.module
    batch = {"pixel_values": torch.rand(2, 3, 64, 64) * 2 - 1, "input_ids": ids("sks, red", "photo of sks character")}
    torch.manual_seed(0)
    module.diffusion_loss(batch)
    assert float(module.base_prior.loss(module, *module.step_inputs, batch["input_ids"])) == 0.0  # zero-init LoRA
    randomise(module.unet)
    per_caption = module.base_prior.loss(module, *module.step_inputs, batch["input_ids"])
    one_prompt = module.base_prior.loss(module, *module.step_inputs)
    assert float(per_caption) > 1e-6 and not torch.allclose(per_caption, one_prompt)  # other prompts were used


def test_per_caption_prompts_errors(fast_config):
    with pytest.raises(ConfigError, match="cache_text_encoder_outputs=false"):
        run(fast_config(*CAPTIONS, "data.cache_text_encoder_outputs=true"))
    with pytest.raises(ConfigError, match="base_prediction_class_word"):
        run(fast_config(*CAPTIONS, "data.instance_prompt=photo of a character"))


def test_per_caption_prompts_train(fast_config):
    summary = run(fast_config(*CAPTIONS, "callbacks.validation_seeds=[]"))
    assert summary["class_images"] == 0 and "train/base_prior_loss" in summary["final_metrics"]


def test_per_caption_prompts_keep_token_ids_with_the_caches_auto_default(fast_config):
    """A frozen text encoder would otherwise get its outputs cached (auto) and the batches lose the captions' ids."""
    parts = prepare_for_test(fast_config(*CAPTIONS, "adapter.train_text_encoder=false"))
    parts.datamodule.build_caches(parts.module)
    assert parts.datamodule.texts is None
