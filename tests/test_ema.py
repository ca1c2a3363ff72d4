"""EMA of the trained weights (sdft/training/ema.py): the saved LoRA is the average of the weights after each step, on the
device or the CPU, and a resumed run's average equals an uninterrupted one's."""

from __future__ import annotations

import shutil

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from sdft.training.ema import EmaWeights
from sdft.errors import ConfigError
from sdft.run.train import run
from helpers.wiring import prepare_for_test
from test_resume import LORA, cut_back, same_lora, subject  # noqa: F401  (subject: the 3-image fixture)

QUIET = ["callbacks.validation_seeds=[]", "callbacks.fixed_noise_loss=false", "optim.lr=1e-2"]


class Recorder(L.Callback):
    """The trained weights after every optimizer step (listed after the EMA callback: it must not see the average)."""

    def __init__(self):
        self.after = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.after.append({n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad})


def expected_average(history: list[dict], decay: float, start: int) -> dict:
    """diffusers' EMAModel schedule written out: decay 0 up to start+1 steps, then min(decay, (1+n)/(10+n))."""
    avg = None
    for k, weights in enumerate(history, start=1):
        n = max(0, k - start - 1)
        d = 0.0 if n <= 0 else min(decay, (1 + n) / (10 + n))
        avg = (
            {key: w.clone() for key, w in weights.items()}
            if avg is None
            else {key: avg[key] - (1 - d) * (avg[key] - weights[key]) for key in avg}
        )
    return avg


def fit_with_recorder(fast_config, *overrides):
    parts = prepare_for_test(fast_config(*QUIET, "trainer.max_steps=5", "ema.enabled=true", *overrides))
    recorder = Recorder()
    parts.trainer.callbacks.insert(2, recorder)  # after EmaWeights (index 1), before the checkpoint
    assert isinstance(parts.trainer.callbacks[1], EmaWeights)
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    return parts, recorder


@pytest.mark.parametrize("device", ["same", "cpu"])
def test_the_saved_lora_is_the_average(device, fast_config, tmp_path):
    parts, recorder = fit_with_recorder(fast_config, "ema.decay=0.5", "ema.start_step=1", f"ema.device={device}")
    ema = parts.trainer.callbacks[1].ema
    assert all(s.device.type == "cpu" for s in ema.shadow_params) and ema.optimization_step == 5
    expected = expected_average(recorder.after, 0.5, 1)
    final = {n: p.detach() for n, p in parts.module.named_parameters() if p.requires_grad}
    raw = recorder.after[-1]
    assert max(float((expected[k] - raw[k]).abs().max()) for k in raw) > 1e-4, "average = last weights: no test"
    for k in final:  # the phase ends on the average (ema.save_ema_weights=true)
        assert torch.allclose(final[k], expected[k], atol=1e-6), k
    saved = load_file(str(tmp_path / "out" / "main" / "lora" / LORA))
    lora_b = next(k for k in final if ".lora_B." in k and k.startswith("unet."))
    peft_key = next(k for k in saved if lora_b.split("unet.", 1)[1].replace(".default", "") in k)
    assert torch.allclose(saved[peft_key], expected[lora_b], atol=1e-6)


def test_ema_off_by_default_and_start_step_keeps_the_weights(fast_config, tmp_path):
    assert not any(isinstance(c, EmaWeights) for c in prepare_for_test(fast_config(*QUIET)).trainer.callbacks)
    parts, recorder = fit_with_recorder(fast_config, "ema.start_step=10")  # never starts averaging in 5 steps
    final = {n: p.detach() for n, p in parts.module.named_parameters() if p.requires_grad}
    assert all(torch.allclose(final[k], recorder.after[-1][k], rtol=0, atol=1e-7) for k in final)  # s - (s - w)


def test_save_raw_weights_and_the_average_beside_them(fast_config, tmp_path):
    parts, recorder = fit_with_recorder(fast_config, "ema.decay=0.5", "ema.save_ema_weights=false")
    final = {n: p.detach() for n, p in parts.module.named_parameters() if p.requires_grad}
    assert all(torch.equal(final[k], recorder.after[-1][k]) for k in final)  # the phase ends on the raw weights
    phase = tmp_path / "out" / "main"
    assert same_lora(phase / "lora_ema" / LORA, phase / "lora" / LORA) > 1e-4
    assert (phase / "lora_ema" / "sdft.safetensors").is_file()  # the kohya file too


def test_bad_ema_config_is_refused(fast_config):
    with pytest.raises(ConfigError, match="ema.device"):
        run(fast_config("ema.enabled=true", "ema.device=gpu"))
    with pytest.raises(ConfigError, match="ema.decay"):
        run(fast_config("ema.enabled=true", "ema.decay=1.5"))


def test_resumed_ema_equals_the_uninterrupted_one(fast_config, subject, tmp_path):  # noqa: F811
    args = [
        f"data.instance_dir={subject}",
        "data.instance_prompt=photo of sks character",
        *QUIET,
        "trainer.max_steps=8",
        "callbacks.checkpoint_every_n_steps=1",
        "callbacks.keep_last_k=20",
        "ema.enabled=true",
        "ema.decay=0.9",
    ]
    run(fast_config(f"output_dir={tmp_path / 'straight'}", *args))
    raw = run(fast_config(f"output_dir={tmp_path / 'raw'}", *args, "ema.enabled=false"))
    assert same_lora(tmp_path / "straight" / "main" / "lora" / LORA, raw["output"]) > 1e-4, "EMA changed nothing"
    for step in (3, 5):
        out = tmp_path / f"cut{step}"
        shutil.copytree(tmp_path / "straight", out)
        cut_back(out, step)
        assert run(fast_config(f"output_dir={out}", *args, "resume=auto"))["steps"] == 8
        diff = same_lora(out / "main" / "lora" / LORA, tmp_path / "straight" / "main" / "lora" / LORA)
        assert diff <= 1e-6, f"resumed from step {step}: the EMA LoRA differs by {diff}"


def test_ema_is_a_per_phase_section(fast_config, tmp_path):
    """`phases.N.overrides.ema` switches EMA for that phase only: the second phase writes lora_ema/, the first not."""
    from sdft.run.phases import phase_configs
    from sdft.run.train import as_config

    two = [
        "+experiment=dual_phase",
        "model=tiny",
        "trainer=cpu",
        "trainer.enable_progress_bar=false",
        "prior=none",
        "logger=none",
        *QUIET,
        "phases.0.overrides.trainer.max_steps=2",
        "phases.1.overrides.trainer.max_steps=2",
        "+phases.1.overrides.ema={enabled: true, decay: 0.5, save_ema_weights: false}",
    ]
    cfg = as_config(fast_config(*two))
    assert [p.ema.enabled for p in phase_configs(cfg)] == [False, True]
    run(cfg)
    first, second = (p.name for p in cfg.phases)
    assert not (tmp_path / "out" / first / "lora_ema").exists()
    assert same_lora(tmp_path / "out" / second / "lora_ema" / LORA, tmp_path / "out" / second / "lora" / LORA) > 1e-4
