"""Loss and noise options (sdft/training/losses.py, sdft/training/noise.py): each changes what it should and nothing else; the defaults
reproduce the plain step's loss bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from sdft.config import HuberSchedule, LossConfig, LossKind, OptimConfig, PredictionType, TimestepSampling
from sdft.errors import ConfigError
from sdft.training.losses import debiased_weights, elementwise_loss, huber_threshold, per_sample_loss
from sdft.models.loading import make_noise_scheduler
from sdft.training.module import DreamBoothModule, StepModels
from sdft.training.noise import (
    check_zero_terminal_snr,
    perturb,
    pyramid_noise,
    sample_noise,
    sample_timesteps,
    use_zero_terminal_snr,
)
from sdft.run.train import run

BATCH = {"pixel_values": torch.rand(2, 3, 64, 64) * 2 - 1, "input_ids": torch.zeros(2, 77, dtype=torch.long)}


def scheduler(prediction_type="epsilon"):
    return DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=prediction_type
    )


def module(pipe, **loss) -> DreamBoothModule:
    models = StepModels(pipe.unet, pipe.text_encoder, pipe.vae, DDPMScheduler.from_config(pipe.scheduler.config))
    return DreamBoothModule(models, OptimConfig(), LossConfig(**loss))


def old_step_loss(m: DreamBoothModule, batch: dict) -> torch.Tensor:
    """The step as it was before these options (copied from sdft/training/module.py at f1d11e8)."""
    latents = m.encode_latents(batch["pixel_values"]).contiguous()
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, m.noise_scheduler.config.num_train_timesteps, (latents.shape[0],)).long()
    noisy = m.noise_scheduler.add_noise(latents, noise, timesteps)
    pred = m.unet(noisy, timesteps, m.encode_text(batch["input_ids"])).sample.float()
    return F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))


def spied_step(m: DreamBoothModule, seed: int = 0) -> dict:
    """One diffusion_loss call at a fixed seed, recording what went into and came out of the U-Net step."""
    seen = {}
    real = m.predict

    def spy(latents, noise, timesteps, text, input_noise=None):
        seen.update(noise=noise, timesteps=timesteps, input_noise=input_noise)
        seen["pred"], seen["target"] = real(latents, noise, timesteps, text, input_noise)
        return seen["pred"], seen["target"]

    m.predict = spy
    torch.manual_seed(seed)
    seen["loss"] = m.diffusion_loss(BATCH)[0]
    return seen


def test_defaults_reproduce_the_plain_loss_bit_for_bit(tiny_pipe_factory):
    m = module(tiny_pipe_factory())
    torch.manual_seed(3)
    new = m.diffusion_loss(BATCH)[0]
    torch.manual_seed(3)
    assert torch.equal(new, old_step_loss(m, BATCH))


@pytest.mark.parametrize("kind", [LossKind.l1, LossKind.huber, LossKind.smooth_l1])
def test_loss_kind_changes_only_the_loss(kind, tiny_pipe_factory):
    pipe = tiny_pipe_factory()
    base, other = spied_step(module(pipe)), spied_step(module(pipe, kind=kind, huber_schedule="constant", huber_c=0.3))
    for key in ("noise", "timesteps", "pred", "target"):
        assert torch.equal(base[key], other[key]), f"loss.kind={kind.value} changed the {key}"
    assert not torch.allclose(base["loss"], other["loss"])
    r = other["pred"] - other["target"]
    expected = {
        LossKind.l1: r.abs(),
        LossKind.huber: 0.6 * (torch.sqrt(r**2 + 0.09) - 0.3),
        LossKind.smooth_l1: 2 * (torch.sqrt(r**2 + 0.09) - 0.3),
    }[kind]
    assert torch.allclose(other["loss"], expected.mean(dim=(1, 2, 3)))


def test_pseudo_huber_is_quadratic_near_zero_and_linear_far_away():
    c = torch.tensor([0.1])
    small, large = torch.full((1, 1, 1, 1), 1e-3), torch.full((1, 1, 1, 1), 100.0)
    zero = torch.zeros(1, 1, 1, 1)
    assert torch.allclose(elementwise_loss(small, zero, LossKind.huber, c), small**2, rtol=1e-3)
    assert torch.allclose(elementwise_loss(large, zero, LossKind.huber, c), 2 * 0.1 * large, rtol=1e-2)
    assert torch.allclose(elementwise_loss(large, zero, LossKind.smooth_l1, c), 2 * large, rtol=1e-2)


def test_huber_schedules():
    s, t = scheduler(), torch.tensor([0, 250, 500, 999])
    assert torch.equal(huber_threshold(t, s, 0.1, HuberSchedule.constant), torch.full((4,), 0.1))
    exp = huber_threshold(t, s, 0.1, HuberSchedule.exponential)
    assert exp[0] == 1 and torch.isclose(
        huber_threshold(torch.tensor([1000]), s, 0.1, HuberSchedule.exponential), torch.tensor(0.1)
    )
    snr = huber_threshold(t, s, 0.1, HuberSchedule.snr)
    assert (snr.diff() < 0).all() and snr[0] > 0.9 and 0.1 < snr[-1] < 0.15  # L2-like early, L1-like late


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_debiased_estimation_weights(prediction_type, tiny_pipe_factory):
    s, t = scheduler(prediction_type), torch.tensor([0, 10, 500, 999])
    snr = compute_snr(s, t).clamp(max=1000)
    expected = 1 / (snr + 1) if prediction_type == "v_prediction" else 1 / snr.sqrt()
    assert torch.allclose(debiased_weights(t, s), expected)
    pred, target = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    plain = per_sample_loss(pred, target, t, s, LossConfig())
    assert torch.allclose(per_sample_loss(pred, target, t, s, LossConfig(debiased_estimation=True)), plain * expected)


def test_pyramid_noise_adds_low_frequencies_at_unit_variance():
    torch.manual_seed(0)
    noise = torch.randn(8, 4, 64, 64)
    out = pyramid_noise(noise, iterations=6, discount=0.8)
    assert out.shape == noise.shape and abs(float(out.std()) - 1) < 1e-4
    coarse = lambda x: F.avg_pool2d(x, 16).var()  # noqa: E731  (energy at 1/16 of the resolution)
    assert coarse(out) > 5 * coarse(noise)
    torch.manual_seed(0)
    plain = sample_noise(torch.zeros(2, 4, 8, 8), LossConfig())
    torch.manual_seed(0)
    assert torch.equal(plain, torch.randn(2, 4, 8, 8)), "pyramid_noise_iterations=0 must not draw anything"


def test_input_perturbation_changes_the_input_not_the_target(tiny_pipe_factory):
    pipe = tiny_pipe_factory()
    base, pert = spied_step(module(pipe)), spied_step(module(pipe, input_perturbation=0.5))
    assert torch.equal(base["noise"], pert["noise"]) and torch.equal(base["target"], pert["target"])
    assert torch.equal(base["timesteps"], pert["timesteps"])
    assert base["input_noise"] is base["noise"]  # off: the very same tensor (perturb returns it)
    diff = pert["input_noise"] - pert["noise"]
    assert 0.4 < float(diff.std()) < 0.6  # 0.5 × unit noise
    assert perturb(base["noise"], LossConfig()) is base["noise"]


@pytest.mark.parametrize("sampling", list(TimestepSampling))
def test_timesteps_stay_in_range(sampling):
    cfg = LossConfig(min_timestep=200, max_timestep=700, timestep_sampling=sampling)
    torch.manual_seed(0)
    t = sample_timesteps(4000, 1000, cfg, "cpu")
    assert t.dtype == torch.long and int(t.min()) >= 200 and int(t.max()) <= 699
    assert int(t.min()) < 260 and int(t.max()) > 640  # the whole range is reachable
    if sampling == TimestepSampling.logit_normal:  # concentrated in the middle
        assert ((t > 325) & (t < 575)).float().mean() > 0.6


def test_logit_normal_mean_shifts_the_timesteps():
    torch.manual_seed(0)
    low = sample_timesteps(2000, 1000, LossConfig(timestep_sampling="logit_normal", logit_mean=-1.0), "cpu")
    high = sample_timesteps(2000, 1000, LossConfig(timestep_sampling="logit_normal", logit_mean=1.0), "cpu")
    assert low.float().mean() < 350 < 650 < high.float().mean()


@pytest.mark.parametrize("low, high", [(500, 500), (-1, None), (0, 1001)])
def test_bad_timestep_range_is_refused(low, high):
    with pytest.raises(ConfigError, match="loss.min_timestep"):
        sample_timesteps(2, 1000, LossConfig(min_timestep=low, max_timestep=high), "cpu")


def test_zero_terminal_snr_scheduler(tiny_pipe_factory):
    pipe = tiny_pipe_factory()
    before = float(make_noise_scheduler(pipe).alphas_cumprod[-1])
    use_zero_terminal_snr(pipe)
    assert pipe.scheduler.config.timestep_spacing == "trailing" and pipe.scheduler.config.rescale_betas_zero_snr
    train = make_noise_scheduler(pipe)
    assert before > 1e-3 and float(train.alphas_cumprod[-1]) < 1e-6  # zero SNR at the last step
    pipe.scheduler.set_timesteps(4)
    assert int(pipe.scheduler.timesteps[0]) == 999  # sampling starts at pure noise
    with pytest.raises(ConfigError, match="model.prediction_type=v_prediction"):
        check_zero_terminal_snr(LossConfig(zero_terminal_snr=True), None)
    check_zero_terminal_snr(LossConfig(zero_terminal_snr=True), PredictionType.v_prediction)


def test_all_loss_options_train_together(fast_config):
    summary = run(
        fast_config(
            "loss.kind=huber",
            "loss.huber_schedule=snr",
            "loss.debiased_estimation=true",
            "loss.pyramid_noise_iterations=3",
            "loss.input_perturbation=0.1",
            "loss.timestep_sampling=logit_normal",
            "loss.min_timestep=100",
            "loss.max_timestep=900",
            "loss.zero_terminal_snr=true",
            "model.prediction_type=v_prediction",
            "callbacks.validation_seeds=[0]",
        )
    )
    assert summary["steps"] == 3 and summary["grids"]
    assert all(v == v for v in summary["final_metrics"].values())  # finite, not NaN


def test_sampling_scheduler_follows_the_loras_training_config(tmp_path):
    """A LoRA trained with zero terminal SNR is sampled with the zero-SNR DDIM; others keep the base's scheduler."""
    import json

    from diffusers import PNDMScheduler
    from safetensors.torch import save_file

    from sdft.generation.lora_scheduler import sampling_scheduler

    base = PNDMScheduler()
    trained = {"loss": {"zero_terminal_snr": True}, "model": {"prediction_type": "v_prediction"}}
    tensor = {"w": torch.zeros(1)}
    save_file(tensor, tmp_path / "zsnr.safetensors", {"sdft_config": json.dumps(trained)})
    got = sampling_scheduler(base, tmp_path / "zsnr.safetensors")
    assert type(got).__name__ == "DDIMScheduler" and got.config.rescale_betas_zero_snr
    assert got.config.timestep_spacing == "trailing" and got.config.prediction_type == "v_prediction"
    plain = tmp_path / "plain" / "main" / "lora"
    plain.mkdir(parents=True)
    save_file(tensor, plain / "pytorch_lora_weights.safetensors", {"sdft_config": json.dumps({"loss": {}})})
    assert sampling_scheduler(base, plain / "pytorch_lora_weights.safetensors") is base
    phase = tmp_path / "run" / "main"  # no config in the file's metadata: the phase's config.yaml above it
    (phase / "lora").mkdir(parents=True)
    save_file(tensor, phase / "lora" / "pytorch_lora_weights.safetensors")
    (phase / "config.yaml").write_text("loss:\n  zero_terminal_snr: true\nmodel:\n  prediction_type: null\n")
    got = sampling_scheduler(base, phase / "lora" / "pytorch_lora_weights.safetensors")
    assert got.config.rescale_betas_zero_snr and got.config.prediction_type == base.config.prediction_type
    (tmp_path / "foreign").mkdir()
    save_file(tensor, tmp_path / "foreign" / "lora.safetensors", {"ss_network_dim": "4"})
    assert sampling_scheduler(base, tmp_path / "foreign" / "lora.safetensors") is base  # no config: unchanged
