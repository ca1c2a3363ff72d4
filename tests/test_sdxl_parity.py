"""SDXL training parity with SD 1.x (issue 18): the text-encoder cache (both towers and the pooled embedding), the
base model's prediction as prior, starting a phase from an SDXL LoRA file, and SDXL's bucket area."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from helpers.config import FAST, compose_config
from sdft.adapters.kohya import LoraFormatError
from sdft.adapters.lora import adapter_names
from sdft.data.dataset import BucketDataset
from sdft.families import module_pipeline
from sdft.models.sdxl_tiny import build_sdxl_tiny_pipeline
from sdft.training.prior_prediction import trained_adapter_off
from sdft.run.train import fit, run
from helpers.wiring import prepare_for_test
from test_cache_policy import fitted, two_images
from test_prior_prediction import randomise
from test_sdxl_training import unet_output

SDXL = ["model=sdxl_tiny", "optim.lr=1e-3"]
CLASS = "data.class_prompt=photo of a character"


@pytest.fixture
def sdxl_config(fast_config, tmp_path):
    return lambda *extra: fast_config(*SDXL, f"model.cache_dir={tmp_path / 'cache'}", *extra)


def test_sdxl_text_cache_holds_both_towers_and_keeps_the_losses(sdxl_config, tmp_path):
    args = [
        *two_images(tmp_path),
        "adapter.train_text_encoder=false",
        "prior=default",
        "trainer.max_steps=3",
        "callbacks.fixed_noise_loss=false",
    ]
    auto, cached = fitted(sdxl_config, *args)  # auto: both towers frozen, captions fixed -> cached
    off, plain = fitted(sdxl_config, *args, "data.cache_text_encoder_outputs=false")
    assert off.datamodule.texts is None and auto.datamodule.texts is not None
    entry = auto.datamodule.texts["photo of sks thing"]
    assert set(entry) == {"encoder_hidden_states", "text_embeds"}
    width = auto.pipe.text_encoder.config.hidden_size + auto.pipe.text_encoder_2.config.hidden_size
    assert entry["encoder_hidden_states"].shape == (77, width)
    assert entry["text_embeds"].shape == (auto.pipe.text_encoder_2.config.projection_dim,)
    batch = auto.datamodule.dataset[next(iter(auto.datamodule.sampler()))]
    assert "input_ids" not in batch and batch["text_embeds"].shape[0] == batch["encoder_hidden_states"].shape[0]
    assert len(cached) == len(plain) == 3
    torch.testing.assert_close(cached, plain, rtol=1e-5, atol=1e-6)


def test_sdxl_text_cache_is_skipped_when_a_tower_trains(sdxl_config, tmp_path):
    parts = prepare_for_test(sdxl_config(*two_images(tmp_path), "adapter.train_text_encoder=true"))
    parts.datamodule.build_caches(parts.module)
    assert parts.datamodule.texts is None


def caption_ids(parts, *captions: str) -> torch.Tensor:
    """Token ids as the dataset makes them (SDXL: both tokenizers', (B, 2, 77))."""
    ds = BucketDataset([], [], parts.datamodule.tokenizer, 0)
    return torch.stack([ds.tokens(c) for c in captions])


def test_encode_gives_what_the_unet_takes_for_both_families(sdxl_config, fast_config, tmp_path):
    """Each family's conditioning encodes ids once (what the fixed-noise loss and the cache use); passing that or the
    ids to the step gives the same loss."""
    for config in (fast_config, sdxl_config):
        parts = prepare_for_test(config(*two_images(tmp_path)))
        module = parts.module.eval()
        ids = caption_ids(parts, "photo of sks thing", "a thing")
        latents, noise, steps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([100, 700])
        with torch.no_grad():
            encoded = module.conditioning.encode(module, ids)
            assert set(encoded) == set(module.conditioning.keys)
            torch.testing.assert_close(
                module.loss_at(latents, noise, steps, encoded), module.loss_at(latents, noise, steps, ids)
            )


def test_sdxl_base_prior_target_is_the_base_models_own_prediction(sdxl_config, tmp_path):
    """The target: the base SDXL (adapters off on the U-Net and both towers) under the class prompt, with the
    samples' own time ids and the pooled embedding, equal to diffusers' encode_prompt + U-Net on a fresh base."""
    parts = prepare_for_test(
        sdxl_config(*two_images(tmp_path), "prior=base_prediction", CLASS, "adapter.train_text_encoder=true")
    )
    module = parts.module.eval()
    latents, noise, steps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([200, 600])
    time_ids = torch.tensor([[96.0, 80.0, 16.0, 0.0, 64.0, 64.0], [64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
    with torch.no_grad():
        assert float(module.base_prior.loss(module, latents, noise, steps, None, time_ids)) == 0.0  # zero-init LoRA
        for model in (module.unet, module.text_encoder, module.text_encoder_2):
            randomise(model)
        assert float(module.base_prior.loss(module, latents, noise, steps, None, time_ids)) > 1e-6
        ids = module.base_prior.input_ids.expand(2, -1, -1)
        with trained_adapter_off(module.unet, module.text_encoder, module.text_encoder_2):
            target = module.predict(latents, noise, steps, ids, time_ids=time_ids)[0]
        base = build_sdxl_tiny_pipeline()
        embeds, _, pooled, _ = base.encode_prompt(
            ["photo of a character"] * 2, device="cpu", do_classifier_free_guidance=False
        )
        noisy = module.noise_scheduler.add_noise(latents, noise, steps)
        expect = base.unet(noisy, steps, embeds, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
    torch.testing.assert_close(target, expect, rtol=1e-4, atol=1e-5)


def test_sdxl_per_caption_base_prior_swaps_both_towers_ids_and_trains(sdxl_config, tmp_path):
    captions = [
        *two_images(tmp_path),
        "prior=base_prediction",
        CLASS,
        "prior.base_prediction_captions=true",
        "data.instance_prompt=photo of sks character",
        "trainer.max_steps=2",
        "callbacks.validation_seeds=[]",
    ]
    parts = prepare_for_test(sdxl_config(*captions))
    got = parts.module.base_prior.swap(caption_ids(parts, "photo of sks character, smiling", "sks, on a beach"))
    assert got.shape == (2, 2, 77)
    assert torch.equal(got, caption_ids(parts, "photo of character, smiling", "character, on a beach"))
    summary = fit(parts)
    assert summary["class_images"] == 0 and summary["final_metrics"]["train/base_prior_loss"] >= 0


PARTS = ("unet", "text_encoder", "text_encoder_2")


def lora_weights(module) -> dict[str, torch.Tensor]:
    """The trained adapter's tensors of the U-Net and both towers (peft names, adapter "default")."""
    return {
        f"{part}.{name}": p.detach().clone()
        for part in PARTS
        for name, p in getattr(module, part).named_parameters()
        if ".lora_" in name and ".default." in name
    }


def sgm_kohya_file(kohya, path):
    """Our kohya file as kohya's own SDXL files name the U-Net: SDXL's original `input_blocks` layout (attention
    blocks only: down_blocks.b.attentions.j -> input_blocks.(1 + 3b + j).1, up_blocks.b.attentions.j ->
    output_blocks.(3b + j).1, mid_block.attentions.0 -> middle_block.1; two resnets per level as in SDXL)."""

    def rename(key: str) -> str:
        key = re.sub(
            r"^lora_unet_down_blocks_(\d)_attentions_(\d)_",
            lambda m: f"lora_unet_input_blocks_{1 + 3 * int(m[1]) + int(m[2])}_1_",
            key,
        )
        key = re.sub(
            r"^lora_unet_up_blocks_(\d)_attentions_(\d)_",
            lambda m: f"lora_unet_output_blocks_{3 * int(m[1]) + int(m[2])}_1_",
            key,
        )
        return key.replace("lora_unet_mid_block_attentions_0_", "lora_unet_middle_block_1_")

    with safe_open(str(kohya), "pt") as f:
        tensors = {rename(k): f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    unet = [k for k in tensors if k.startswith("lora_unet_")]
    sgm = ("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_")
    assert unet and all(k.startswith(sgm) for k in unet)
    save_file(tensors, str(path), meta)
    return path


@pytest.fixture(scope="module")
def first_sdxl_run(tmp_path_factory, tiny_cache):
    """A 2-step SDXL LoRA run (U-Net and both towers, alpha != rank): its trained module and its files."""
    tmp = tmp_path_factory.mktemp("first")
    cfg = compose_config(
        [
            *FAST,
            *SDXL,
            "trainer.max_steps=2",
            "adapter.alpha=2",
            f"model.cache_dir={tmp / 'cache'}",
            f"output_dir={tmp / 'out'}",
            "callbacks.validation_seeds=[]",
            "optim.text_encoder_lr=1e-3",
        ]
    )
    parts = prepare_for_test(cfg)
    fit(parts)
    files = {"diffusers": parts.checkpoint.final_path, "kohya": parts.checkpoint.final_kohya_path}
    files["kohya_sgm"] = sgm_kohya_file(files["kohya"], tmp / "third_party.safetensors")
    return parts, files


@pytest.mark.parametrize("fmt", ["diffusers", "kohya", "kohya_sgm"])
def test_sdxl_init_lora_continues_from_the_files_weights(first_sdxl_run, sdxl_config, fmt):
    """phase.init_lora with sdft's SDXL files and a third-party kohya file (original layout names): the new run's
    adapter at step 0 is the previous run's, in the U-Net and both towers (<= 1e-6), and it trains on."""
    first, files = first_sdxl_run
    want = lora_weights(first.module)
    assert {k.partition(".")[0] for k in want} == set(PARTS)
    assert max(float(v.abs().max()) for k, v in want.items() if ".lora_B." in k) > 0  # trained: B moved off zero
    parts = prepare_for_test(
        sdxl_config(f"phase.init_lora={files[fmt]}", "phase.start=continue", "trainer.max_steps=2")
    )
    got = lora_weights(parts.module)
    assert got.keys() == want.keys()
    assert max(float((got[k] - want[k]).abs().max()) for k in want) <= 1e-6
    assert all(p.requires_grad for n, p in parts.module.named_parameters() if ".lora_" in n)
    pipe = lambda p: module_pipeline(p.module.eval(), p.pipe.tokenizer, p.pipe.tokenizer_2, p.pipe.scheduler)  # noqa: E731
    torch.testing.assert_close(unet_output(pipe(parts)), unet_output(pipe(first)), rtol=1e-5, atol=1e-6)
    summary = fit(parts)
    assert summary["steps"] == 2 and max(float((lora_weights(parts.module)[k] - want[k]).abs().max()) for k in want) > 0


@pytest.mark.parametrize("start", ["stack", "merge"])
def test_sdxl_init_lora_stack_and_merge_start_from_the_files_model(first_sdxl_run, sdxl_config, start):
    """stack: the file's adapter frozen under the name `init`, a new zero one trains on top; merge: folded into the
    weights. Either way the model at step 0 computes what the previous run's did."""
    first, files = first_sdxl_run
    parts = prepare_for_test(sdxl_config(f"phase.init_lora={files['kohya']}", f"phase.start={start}"))
    want = ["default", "init"] if start == "stack" else ["default"]
    for part in PARTS:
        assert sorted(adapter_names(getattr(parts.module, part))) == want, part
    frozen = [n for n, p in parts.module.named_parameters() if ".init." in n and p.requires_grad]
    assert not frozen
    pipe = lambda p: module_pipeline(p.module.eval(), p.pipe.tokenizer, p.pipe.tokenizer_2, p.pipe.scheduler)  # noqa: E731
    torch.testing.assert_close(unet_output(pipe(parts)), unet_output(pipe(first)), rtol=1e-4, atol=1e-5)


def test_sdxl_init_lora_refuses_a_file_that_does_not_fit(sdxl_config, fast_config, tmp_path):
    sd1 = run(fast_config("trainer.max_steps=1", "callbacks.validation_seeds=[]", f"output_dir={tmp_path / 'sd1'}"))
    with pytest.raises(LoraFormatError, match="SD 1.x LoRA"):
        prepare_for_test(sdxl_config(f"phase.init_lora={sd1['output_kohya']}", "phase.start=continue"))


def test_null_resolution_trains_at_the_models_native_size(sdxl_config, fast_config, tmp_path):
    """data=folder leaves data.resolution and the bucket limits null: each base fills in its own native size (the
    tiny models: 64, limits 32..128); the grids, the fixed-noise loss and the buckets use it; a set value is kept."""
    images = [*two_images(tmp_path), "data.enable_bucket=true"]
    for config in (fast_config, sdxl_config):
        parts = prepare_for_test(config("data=folder", *images, "data.resolution=null"))
        data = parts.cfg.data
        assert (data.resolution, data.min_bucket_reso, data.max_bucket_reso) == (64, 32, 128)
        assert parts.grids.resolution == 64 and parts.datamodule.buckets == [(64, 64)] * 2
    kept = prepare_for_test(sdxl_config("data=folder", *images, "data.resolution=128"))
    assert kept.cfg.data.resolution == 128 and kept.datamodule.buckets == [(128, 128)] * 2
