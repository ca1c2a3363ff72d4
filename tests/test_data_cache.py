"""Rule 4: latent and text-encoder caches: keys, invalidation, disk reuse, flips, and identical losses."""

from __future__ import annotations

import torch

from helpers.images import noise_image
from sdft.config import DataConfig, LossConfig, OptimConfig
from sdft.data.cache import LatentCache, latent_key, vae_identity
from sdft.data.datamodule import DreamBoothDataModule, class_examples, scan_dataset, training_settings
from sdft.models.loading import make_noise_scheduler
from sdft.training.module import DreamBoothModule, StepModels


def test_latent_key_changes_with_every_ingredient():
    base = dict(file_digest="abc", size=(64, 64), crop=(0, 0), flip=False, background=(255, 255, 255), vae_id="v1")
    key = latent_key(**base)
    for change in (
        dict(file_digest="abd"),
        dict(size=(64, 96)),
        dict(crop=(0, 8)),
        dict(flip=True),
        dict(background=(0, 0, 0)),
        dict(vae_id="v2"),
    ):
        assert latent_key(**{**base, **change}) != key
    assert latent_key(**base) == key


def test_vae_identity_follows_the_weights(tiny_pipe_factory):
    vae = tiny_pipe_factory().vae
    before = vae_identity(vae)
    assert vae_identity(vae) == before
    with torch.no_grad():
        next(vae.parameters()).add_(1e-3)
    assert vae_identity(vae) != before


def test_vae_identity_of_a_channels_last_vae(tiny_pipe_factory):
    """model.channels_last=true with cached latents crashed here: a channels_last 1x1 conv weight is "contiguous"
    with a last stride of C, which Tensor.view(uint8) refuses. The layout does not change the weights' identity."""
    vae = tiny_pipe_factory().vae
    before = vae_identity(vae)
    vae.to(memory_format=torch.channels_last)
    assert vae.quant_conv.weight.stride(-1) != 1  # the case that crashed
    assert vae_identity(vae) == before


def dataset(tmp_path, **kw):
    for k, size in enumerate([(80, 64), (64, 80), (64, 64)]):
        noise_image(tmp_path / "inst" / f"{k}.png", size=size, seed=k)
    cfg = DataConfig(
        instance_dir=str(tmp_path / "inst"),
        instance_prompt="photo of sks thing",
        resolution=64,
        batch_size=2,
        enable_bucket=True,
        min_bucket_reso=32,
        max_bucket_reso=128,
        bucket_reso_steps=32,
        **kw,
    )
    classes = [noise_image(tmp_path / "cls" / f"c{k}.png", size=(64, 64), seed=10 + k) for k in range(2)]
    return cfg, scan_dataset(cfg).examples, class_examples(classes, "photo of a thing")


def module_of(pipe):
    pipe.text_encoder.requires_grad_(False)
    models = StepModels(pipe.unet, pipe.text_encoder, pipe.vae, make_noise_scheduler(pipe))
    return DreamBoothModule(models, OptimConfig(), LossConfig(), prior_loss_weight=1.0, train_text_encoder=False)


def losses(dm, module, epochs=2):
    dm.setup("fit")
    out = []
    loader = dm.train_dataloader()
    for _ in range(epochs):
        for batch in loader:
            torch.manual_seed(len(out))
            with torch.no_grad():
                out.append(module.diffusion_loss(batch)[0])
    return torch.cat(out), batch


def test_caching_does_not_change_losses(tiny_pipe_factory, tmp_path):
    module = module_of(tiny_pipe_factory())
    cfg, inst, cls = dataset(tmp_path, random_flip=True)
    plain, plain_batch = losses(
        DreamBoothDataModule(training_settings(cfg), tiny_pipe_factory().tokenizer, inst, cls, seed=3), module
    )
    cached_cfg, _, _ = dataset(tmp_path, random_flip=True, cache_latents=True, cache_text_encoder_outputs=True)
    dm = DreamBoothDataModule(training_settings(cached_cfg), tiny_pipe_factory().tokenizer, inst, cls, seed=3)
    dm.build_caches(module)
    cached, cached_batch = losses(dm, module)
    assert "latent_dist" in cached_batch and "encoder_hidden_states" in cached_batch
    assert "pixel_values" in plain_batch and "input_ids" in plain_batch
    assert len(dm.latents.cache.memory) > len(inst) + len(cls)  # flipped entries too
    torch.testing.assert_close(cached, plain, rtol=1e-4, atol=1e-5)


def test_disk_cache_is_reused_and_invalidated(tiny_pipe_factory, tmp_path):
    module = module_of(tiny_pipe_factory())
    cfg, inst, cls = dataset(tmp_path, cache_latents=True, cache_to_disk=True, cache_dir=str(tmp_path / "cache"))
    tok = tiny_pipe_factory().tokenizer
    first = DreamBoothDataModule(training_settings(cfg), tok, inst, cls, seed=0)
    first.build_caches(module)
    n = first.latents.cache.computed
    assert n > 0 and len(list((tmp_path / "cache").glob("*.safetensors"))) == n
    again = DreamBoothDataModule(training_settings(cfg), tok, inst, cls, seed=0)
    again.build_caches(module)
    assert again.latents.cache.computed == 0 and again.latents.cache.hits == n  # reused from disk
    noise_image(inst[0].path, size=inst[0].size, seed=99)  # same name and size, new content
    changed = DreamBoothDataModule(training_settings(cfg), tok, inst, cls, seed=0)
    changed.build_caches(module)
    assert changed.latents.cache.computed >= 1 and changed.latents.cache.hits == n - changed.latents.cache.computed


def test_text_cache_skipped_when_captions_change(tiny_pipe_factory, tmp_path, caplog):
    module = module_of(tiny_pipe_factory())
    cfg, inst, cls = dataset(tmp_path, cache_text_encoder_outputs=True, caption_dropout=0.1)
    dm = DreamBoothDataModule(training_settings(cfg), tiny_pipe_factory().tokenizer, inst, cls, seed=0)
    dm.build_caches(module)
    assert dm.texts is None and "captions change" in caplog.text


def test_memory_cache_roundtrip(tmp_path):
    cache = LatentCache(tmp_path)
    cache.put("k", torch.ones(8, 2, 2))
    assert torch.equal(LatentCache(tmp_path)["k"], torch.ones(8, 2, 2)) and "missing" not in cache
