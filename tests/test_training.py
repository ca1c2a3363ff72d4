"""End-to-end runs on the tiny model: each adapter preset trains and writes what it should."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from safetensors import safe_open

from sdft.images_grid import HEADER_HEIGHT, LABEL_WIDTH, MIN_TILE
from sdft.run.train import run
from helpers.wiring import prepare_for_test


def read_metrics(out_dir) -> list[dict]:
    with open(out_dir / "logs" / "main" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("preset", ["lora_attn", "lora_attn_ff"])
def test_lora_run_writes_lora_grid_and_summary(preset, fast_config, tiny_pipe_factory, tmp_path):
    summary = run(fast_config(f"adapter={preset}"))
    out = tmp_path / "out"
    lora = out / "main" / "lora" / "pytorch_lora_weights.safetensors"
    assert summary["output"] == str(lora) and lora.is_file()
    assert summary["steps"] == 3
    assert json.loads((out / "summary.json").read_text())["steps"] == 3
    with safe_open(str(lora), "pt") as f:
        keys = list(f.keys())
        ups = [f.get_tensor(k) for k in keys if "lora_B" in k]
    assert any(k.startswith("unet.") for k in keys) and any(k.startswith("text_encoder.") for k in keys)
    assert any(".ff.net." in k for k in keys) == (preset == "lora_attn_ff")
    assert any(u.abs().max() > 0 for u in ups), "lora_B is still zero: nothing was trained"
    assert len(summary["grids"]) == 1 and summary["grids"][0].endswith("step_000003_final.png")

    # the kohya/A1111 file beside it: same outputs through diffusers, kohya metadata
    kohya = out / "main" / "lora" / "sdft.safetensors"
    assert summary["output_kohya"] == str(kohya)
    with safe_open(str(kohya), "pt") as f:
        meta = f.metadata()
        assert all(k.startswith(("lora_unet_", "lora_te_text_model_")) for k in f.keys())
    assert meta["ss_steps"] == "3" and meta["ss_network_dim"] == str(4 if preset == "lora_attn" else 8)
    assert "sks" in meta["ss_tag_frequency"]
    images = []
    for path in (lora, kohya):
        pipe = tiny_pipe_factory()
        pipe.set_progress_bar_config(disable=True)
        pipe.load_lora_weights(str(path))
        images.append(
            pipe(
                "photo of sks character",
                num_inference_steps=2,
                height=64,
                width=64,
                output_type="np",
                generator=torch.Generator().manual_seed(0),
            ).images
        )
    assert np.abs(images[0] - images[1]).max() <= 1e-4


def test_full_dreambooth_run_saves_a_loadable_pipeline(fast_config, tiny_pipe_factory, tmp_path):
    summary = run(fast_config("adapter=full", "optim.lr=1e-3"))
    folder = tmp_path / "out" / "main" / "model"
    assert summary["output"] == str(folder)
    assert summary["parameters"]["unet"]["trainable"] == summary["parameters"]["unet"]["total"]
    trained = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    base = tiny_pipe_factory()
    diffs = [(a - b).abs().max().item() for a, b in zip(trained.unet.parameters(), base.unet.parameters())]
    assert max(diffs) > 0, "U-Net weights did not change"
    te_same = all(torch.equal(a, b) for a, b in zip(trained.text_encoder.parameters(), base.text_encoder.parameters()))
    assert te_same, "text encoder changed although train_text_encoder=false"


def test_prior_preservation_uses_class_images_and_logs_both_losses(fast_config, tmp_path):
    cfg = fast_config("prior=default", "prior.num_class_images=3", "data.batch_size=2")
    parts = prepare_for_test(cfg)
    class_files = sorted((tmp_path / "class").glob("*.png"))
    assert len(class_files) == 3
    parts.datamodule.setup("fit")
    batch = next(iter(parts.datamodule.train_dataloader()))
    assert batch["is_prior"].tolist() == [False, False, True, True]
    class_ids = parts.datamodule.tokenizer(
        "photo of a character", padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids[0]
    assert all(torch.equal(ids, class_ids) for ids in batch["input_ids"][2:])
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    rows = read_metrics(tmp_path / "out")
    logged = [r for r in rows if r.get("train/prior_loss")]
    assert len(logged) == 3 and all(r["train/instance_loss"] for r in logged)
    for r in logged:  # total = instance + weight * prior
        assert float(r["train/loss"]) == pytest.approx(
            float(r["train/instance_loss"]) + float(r["train/prior_loss"]), rel=1e-5
        )


def test_grid_png_has_expected_size(fast_config, tmp_path, monkeypatch):
    from diffusers import AutoencoderKL

    decoded, real_decode = [], AutoencoderKL._decode

    def counting(self, z, *args, **kwargs):  # _decode is what decode calls once per slice
        decoded.append((z.shape[0], self.use_slicing))
        return real_decode(self, z, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "_decode", counting)
    summary = run(
        fast_config("callbacks.validation_seeds=[0,1,2]", "callbacks.validation_at_start=true", "prior=default")
    )
    # grids decode one image at a time (the decode of all seeds at once was a run's memory peak, issue #21)
    assert decoded and all(d == (1, True) for d in decoded[-6:]), decoded
    assert len(summary["grids"]) == 2  # before training and at the end
    with Image.open(summary["grids"][-1]) as grid:
        rows, cols, tile = 2, 3, max(64, MIN_TILE)  # instance + class prompt, 3 seeds
        assert grid.size == (LABEL_WIDTH + cols * tile, HEADER_HEIGHT + rows * tile)
        cells = np.asarray(grid)[HEADER_HEIGHT:, LABEL_WIDTH:]
        assert cells.std() > 1, "grid cells are blank"


def fixed_loss(module, batch, seed=0) -> float:
    """Diffusion loss at fixed noise and timesteps: comparable across training steps."""
    module.eval()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        losses = [module.diffusion_loss(batch)[0].mean().item() for _ in range(8)]
    module.train()
    return float(np.mean(losses))


def test_loss_falls_when_overfitting_one_image(fast_config, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    Image.open("datasets/example_subject/face/face_00.png").save(one / "face.png")
    parts = prepare_for_test(
        fast_config(
            f"data.instance_dir={one}",
            "trainer.max_steps=30",
            "optim.lr=1e-2",
            "optim.text_encoder_lr=1e-2",
            "adapter=lora_attn_ff",
            "logger=none",
            "callbacks.validation_seeds=[]",
        )
    )
    parts.datamodule.setup("fit")
    batch = next(iter(parts.datamodule.train_dataloader()))
    before = fixed_loss(parts.module, batch)
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    after = fixed_loss(parts.module, batch)
    print(f"fixed-noise loss before {before:.4f} after {after:.4f}")
    assert after < 0.8 * before, (before, after)


def test_validation_split_holds_images_out_of_training(fast_config):
    from sdft.data.datamodule import instance_examples, split_validation
    from sdft.errors import DataError

    cfg = fast_config("data.validation_split=0.25", "trainer.max_steps=2")
    everything = instance_examples(cfg.data)
    train, held = split_validation(everything, 0.25, cfg.seed)
    assert len(held) == round(0.25 * len(everything)) and not {e.path for e in train} & {e.path for e in held}
    assert split_validation(everything, 0.25, cfg.seed) == (train, held)  # seeded
    summary = run(cfg)
    assert summary["instance_images"] == len(train) and summary["validation_images"] == len(held)
    assert summary["final_metrics"]["val/fixed_noise_loss"] > 0
    with pytest.raises(DataError, match="validation_split"):
        split_validation(everything, 1.0, 0)
