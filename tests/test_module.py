"""The training step's options: v-prediction target, min-SNR weights, noise offset, 8-bit AdamW, checkpoint retention."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from sdft.config import LossConfig, OptimConfig
from sdft.training.module import DreamBoothModule, StepModels
from sdft.run.train import run
from helpers.wiring import prepare_for_test


def bare_module(pipe, prediction_type="epsilon", **loss) -> DreamBoothModule:
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config, prediction_type=prediction_type)
    models = StepModels(pipe.unet, pipe.text_encoder, pipe.vae, scheduler)
    return DreamBoothModule(models, OptimConfig(), LossConfig(**loss))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights(prediction_type, tiny_pipe_factory):
    module = bare_module(tiny_pipe_factory(), prediction_type, min_snr_gamma=5.0)
    t = torch.tensor([1, 100, 500, 999])
    snr = compute_snr(module.noise_scheduler, t)
    expected = torch.minimum(snr, torch.tensor(5.0)) / (snr + 1 if prediction_type == "v_prediction" else snr)
    assert torch.allclose(module.snr_weights(t), expected)
    assert snr[0] > 5.0 > snr[-1]  # the range covers both clipped and unclipped timesteps


def test_v_prediction_target_is_velocity(tiny_pipe_factory, monkeypatch):
    pipe = tiny_pipe_factory()
    module = bare_module(pipe, "v_prediction")
    seen = {}
    real = module.noise_scheduler.get_velocity

    def spy(latents, noise, timesteps):
        seen["called"] = True
        return real(latents, noise, timesteps)

    monkeypatch.setattr(module.noise_scheduler, "get_velocity", spy)
    batch = {"pixel_values": torch.zeros(1, 3, 64, 64), "input_ids": torch.zeros(1, 77, dtype=torch.long)}
    loss, _ = module.diffusion_loss(batch)
    assert seen.get("called") and torch.isfinite(loss).all()


def test_noise_offset_changes_the_noise(tiny_pipe_factory):
    pipe = tiny_pipe_factory()
    batch = {"pixel_values": torch.zeros(2, 3, 64, 64), "input_ids": torch.zeros(2, 77, dtype=torch.long)}
    losses = []
    for offset in (0.0, 0.5):
        torch.manual_seed(0)
        losses.append(bare_module(pipe, noise_offset=offset).diffusion_loss(batch)[0])
    assert not torch.allclose(losses[0], losses[1])


def test_options_together_train(fast_config, tmp_path):
    summary = run(
        fast_config(
            "optim=adamw8bit",
            "loss.min_snr_gamma=5",
            "loss.noise_offset=0.05",
            "model.prediction_type=v_prediction",
            "model.gradient_checkpointing=true",
            "optim.scheduler=cosine",
            "optim.warmup_steps=1",
            "callbacks.validation_seeds=[]",
        )
    )
    assert summary["steps"] == 3 and all(v == v for v in summary["final_metrics"].values())  # finite, not NaN


def test_checkpoints_keep_last_k(fast_config, tmp_path):
    run(
        fast_config(
            "trainer.max_steps=5",
            "callbacks.checkpoint_every_n_steps=1",
            "callbacks.keep_last_k=2",
            "callbacks.validation_seeds=[]",
        )
    )
    kept = sorted(p.name for p in (tmp_path / "out" / "main" / "checkpoints").iterdir())
    assert kept == ["step_000003", "step_000004"]
    assert all(
        (tmp_path / "out" / "main" / "checkpoints" / k / "pytorch_lora_weights.safetensors").is_file() for k in kept
    )
    assert not list((tmp_path / "out" / "main").rglob(".tmp*"))


def test_frozen_parts_stay_in_eval(fast_config):
    parts = prepare_for_test(fast_config("adapter.train_text_encoder=false"))
    parts.module.train()
    assert not parts.module.vae.training and not parts.module.text_encoder.training
    assert parts.module.unet.training


def test_wandb_offline_run_writes_its_folder(fast_config, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # artifact staging stays in tmp
    run(fast_config("logger=wandb", "callbacks.validation_seeds=[0]", "logger.log_lora=true"))
    runs = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert list(runs[0].glob("files/media/images/validation/grid_*.png")), "the validation grid was not logged"
    # wandb 0.31 has no Python reader for its record file; its protobuf records hold keys as plain strings
    import time

    record_file, deadline = next(runs[0].glob("*.wandb")), time.monotonic() + 20
    while b"train/loss" not in record_file.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.2)  # wandb-core writes the file out after finish() returns
    records = record_file.read_bytes()
    for key in [
        b"train/loss",
        b"train/instance_loss",
        b"val/fixed_noise_loss",
        b"train/grad_norm",
        b"lr-AdamW/unet",
        b"perf/images_per_sec",
        b"perf/peak_memory_gb",
        b"instance_prompt",
        b"sdft-lora",
    ]:
        assert key in records, f"{key} is not in the offline W&B run"


def test_trained_parts_are_in_train_mode_during_fit(fast_config):
    """Lightning 2.6 does not call module.train() at fit start; the module must do it itself."""
    import lightning as L

    class Probe(L.Callback):
        modes = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.modes.append((module.unet.training, module.text_encoder.training, module.vae.training))

    parts = prepare_for_test(fast_config("callbacks.fixed_noise_loss=false", "callbacks.validation_seeds=[]"))
    parts.trainer.callbacks.append(Probe())
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    assert Probe.modes and all(m == (True, True, False) for m in Probe.modes)


def test_model_compile_compiles_the_unet_in_place(fast_config, monkeypatch):
    """model.compile=true: nn.Module.compile on the U-Net after the adapters (keys, and so saved LoRAs, unchanged)."""
    import torch

    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    parts = prepare_for_test(fast_config("model.compile=true"))
    assert compiled == [parts.module.unet]
    assert any(".lora_A." in k for k in compiled[0].state_dict())  # compiled after LoRA injection
    prepare_for_test(fast_config())
    assert len(compiled) == 1, "compiled without model.compile"
