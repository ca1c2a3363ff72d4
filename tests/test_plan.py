"""`sdft plan`: the report's fields, the forecast against a real tiny step, --fit, bad input (tiny model only)."""

from __future__ import annotations

import json

import pytest
import torch

from sdft.cli import main
from sdft.errors import ConfigError, ModelLoadError
from sdft.run.plan.compose import compose_run, plan_run
from sdft.run.plan.devices import cpu_flops_per_cycle, device

BASE = ["data.resolution=64", "trainer.max_steps=5", "callbacks.validation_seeds=[0]"]


@pytest.fixture(scope="module")
def plan():
    return plan_run(compose_run(BASE), device("cpu"))


def test_report_fields(plan):
    from sdft.run.plan.report import as_json, report

    out = report(plan)
    for field in (
        "concept example_subject: 16 images x 1 repeats",
        "buckets: 64x64 (16)",
        "still to generate",
        "trainable",
        "frozen",
        "final LoRA (kohya/A1111)",
        "peak memory of a training step at 64x64",
        "weights",
        "trainable + optimizer state",
        "activations",
        "workspace",
        "peak memory while sampling",
        "GFLOP a step",
        "plan: 5 steps",
    ):
        assert field in out, field
    data = json.loads(json.dumps(as_json(plan), default=str))
    mem = data["phases"][0]["memory"]
    assert mem["step_peak"] == mem["weights"] + mem["trainable_and_optimizer"] + mem["activations"] + mem["workspace"]
    assert data["phases"][0]["flops_per_step"] > 0 and data["seconds"] > 0


def test_cli_json_on_a_device(capsys):
    assert main(["plan", "--json", "--device", "t4", *BASE]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"] == "t4" and out["steps"] == 5 and out["peak_bytes"] > 0


def test_forecast_against_a_real_tiny_step(plan):
    """Weights and trained parameters match the real model's bytes; activations the tensors a real step saves for
    backward (counted by autograd's saved-tensor hooks), within a loose factor."""
    from tests.helpers.config import compose_config  # noqa: F401  (conftest's path set-up)
    from sdft.models.tiny import build_tiny_pipeline
    from sdft.adapters.lora import start_phase
    from sdft.training.module import DreamBoothModule, StepModels
    from sdft.models.loading import make_noise_scheduler

    cfg = plan.phases[0][0]
    pipe = build_tiny_pipeline()
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.requires_grad_(False)
    start_phase(pipe.unet, pipe.text_encoder, cfg.adapter, "fresh", None)
    models = StepModels(pipe.unet, pipe.text_encoder, pipe.vae, make_noise_scheduler(pipe))
    module = DreamBoothModule(models, cfg.optim, cfg.loss, train_text_encoder=True)
    module.log = lambda *a, **k: None
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    f = plan.phases[0][1]
    assert abs((f.step.weights + f.step.trained_bytes) - params) / params < 0.05
    saved: dict[int, int] = {}

    def pack(t):
        saved.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    n = cfg.data.batch_size
    batch = {
        "latent_dist": torch.randn(n, 8, 8, 8),
        "input_ids": torch.zeros(n, 77, dtype=torch.long),
        "is_prior": torch.zeros(n, dtype=torch.bool),
        "n_instance": n,
    }
    module.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module.training_step(batch, 0)
    real = sum(saved.values()) - params  # saved weights are not activations
    assert 0.5 * real < f.step.activations < 2.5 * real, (f.step.activations, real)


@pytest.mark.slow  # three tiny traces
def test_fit_gives_overrides_that_fit():
    from sdft.run.plan.fit import fit

    # the first candidate left is gradient checkpointing; the meter off, so that the step, not sampling, is the peak
    base = BASE + ["optim=adamw8bit", "callbacks.likeness.enabled=false"]
    plan = plan_run(compose_run(base), device("cpu"))
    f = plan.phases[0][1]
    # a budget that gradient checkpointing meets with room: two traces of one config can differ by ~1.6 % (the first
    # trace in a process vs later ones: 15.84 vs 16.10 MB here), which a budget at 30 % of the activations missed
    budget = (f.step.peak - 0.2 * f.step.activations) / 2**30
    result = fit(base, "config", plan, budget, device("cpu"))
    assert result.overrides == ["model.gradient_checkpointing=true"]
    again = plan_run(compose_run(base + result.overrides), device("cpu"))
    assert again.peak <= budget * 2**30


def test_fit_nothing_fits(plan):
    """Every cheaper setting already in place (no candidate left to trace): an error naming the budget."""
    from sdft.run.plan.fit import candidates, fit

    cfg = plan.phases[0][0]
    left = [c for c in candidates(cfg, device("cpu")) if not c[0].startswith("data.resolution")]
    assert left and left[0] == ["optim=adamw8bit"]
    with pytest.raises(ConfigError, match="Nothing fits in 0.001 GiB"):
        fit(BASE, "config", _without_candidates(plan), 0.001, device("cpu"))


def _without_candidates(plan):
    """The fixture's plan as if every candidate were already set (gradient checkpointing, 8-bit Adam, ...)."""
    import copy

    cfg = copy.deepcopy(plan.phases[0][0])
    cfg.model.gradient_checkpointing = True
    cfg.optim.optimizer._target_ = "bitsandbytes.optim.AdamW8bit"
    cfg.model.weight_dtype = "bf16"
    cfg.data.batch_size = 1
    cfg.data.resolution = 64
    return type(plan)(plan.cfg, plan.arch, plan.device, [(cfg, plan.phases[0][1])])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "tpu9"], "Unknown device 'tpu9'"),
        (["--fit", "lots"], "--fit 'lots'"),
        (["trainer.max_steps=0"], "trainer.max_steps=0: must be >= 1"),
        (["+nonsense=1"], "nonsense"),
        (["model.path=someone/unknown-model"], "not available offline"),
    ],
)
def test_bad_input(capsys, args, message):
    assert main(["plan", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_half_precision_has_its_own_efficiency_where_measured():
    cpu, t4 = device("cpu"), device("t4")
    assert cpu.efficiency_for("bf16-mixed") == cpu.half_efficiency != cpu.efficiency_for("32-true") == cpu.efficiency
    assert t4.half_efficiency is None and t4.efficiency_for("16-mixed") == t4.efficiency


def test_cpu_peak_from_flags():
    assert cpu_flops_per_cycle({"avx512f", "amx_bf16"}) == (64, 1024)
    assert cpu_flops_per_cycle({"avx2", "fma"}) == (32, 32)
    with pytest.raises(ConfigError):
        device("nope")
    assert issubclass(ModelLoadError, Exception)


def test_train_headline_and_cuda_warning(monkeypatch, caplog):
    """What train.py logs before loading (sdft.run.train._run calls announce): the headline, and on a CUDA device with
    less free memory than the forecast, a warning naming `sdft plan --fit`."""
    import logging

    from sdft.run.train import checked_phases
    from sdft.run.plan import headline
    from sdft.run.plan.headline import announce

    monkeypatch.setattr(headline, "UNTRACED_MODELS", ())  # train.py skips the trace for the tiny test model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (1 << 20, 16 << 30))
    cfg = compose_run(BASE)
    with caplog.at_level(logging.INFO, logger="sdft"):
        announce(cfg, *checked_phases(cfg))
    text = caplog.text
    assert "plan: 5 steps, peak memory" in text and "on t4" in text
    assert "exceeds the 0.00 GiB free on Tesla T4" in text and "sdft plan --fit" in text


def test_train_headline_skips_the_tiny_test_model(caplog):
    import logging

    from sdft.run.train import checked_phases
    from sdft.run.plan.headline import announce

    cfg = compose_run(BASE)
    with caplog.at_level(logging.INFO, logger="sdft"):
        announce(cfg, *checked_phases(cfg))
    assert "plan: 5 steps (no forecast for the built-in test model 'tiny'" in caplog.text


def test_fit_report_prints_the_overrides():
    from sdft.run.plan.fit import FitResult, fit_report

    result = FitResult(["model.gradient_checkpointing=true"], 3 * 2**30, 4.0, [("optim=adamw8bit", 5 * 2**30)])
    text = fit_report(result, "4GB")
    assert "+ optim=adamw8bit: 5.00 GiB" in text
    assert "add: model.gradient_checkpointing=true  -> 3.00 GiB" in text


def test_cpu_forecast_adds_the_c_heap(plan, monkeypatch):
    """On the `cpu` device the peak includes what glibc's heap keeps resident (a measured share of the step's
    activations and workspace, devices.py); none on a GPU, none with MALLOC_MMAP_THRESHOLD_ set."""
    import dataclasses

    from sdft.run.plan.report import as_json, report

    f = plan.phases[0][1]
    heap = int(f.device.heap_share * (f.step.activations + f.step.workspace))
    assert f.device.heap_share > 0 and heap > 0 and f.step_peak == f.step.peak + heap
    assert plan.peak == max(f.step_peak, f.grid_peak)
    assert "the C heap keeps resident" in report(plan) and as_json(plan)["phases"][0]["memory"]["step_heap"] == heap
    on_gpu = dataclasses.replace(f, device=device("t4"))
    assert on_gpu.step_peak == f.step.peak and on_gpu.grid_peak == f.generation.peak
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert device("cpu").heap_share == 0


def test_step_time_adds_the_optimizer_step_where_the_device_counts_it(plan):
    """The optimizer step is element-wise (no FLOPs) and bound by memory traffic: on the cpu entry its measured cost
    per trained tensor and element is added to the step (a full fine-tune's is seconds; bench/optimizer_step_cost.py)."""
    import dataclasses

    f = plan.phases[0][1]
    assert f.step.trained_elements == sum(p["trainable"] for p in f.step.params.values()) > 0
    assert f.step.trained_tensors > 0
    flop_seconds = f.seconds(f.step.flops * f.data.accumulate)
    cpu = f.device
    assert cpu.optimizer_s_per_element > 0 and cpu.optimizer_s_per_tensor > 0
    expected = (
        f.step.trained_tensors * cpu.optimizer_s_per_tensor + f.step.trained_elements * cpu.optimizer_s_per_element
    )
    assert f.step_seconds == pytest.approx(flop_seconds + expected)
    gpu = dataclasses.replace(f, device=device("4090"))  # not counted on a GPU: the FLOPs alone
    assert gpu.step_seconds == pytest.approx(gpu.seconds(f.step.flops * f.data.accumulate))


def test_half_precision_weights_at_full_precision_run_at_the_half_rate(plan):
    """A base with bf16 frozen weights trained at 32-true: its matmuls take bf16 inputs and run at the bf16 rate
    (AMX, tensor cores), which the forecast now times apart (SDXL 128² on this CPU: +26 % -> -10 % per CPU second)."""
    assert plan.phases[0][1].step.half_flops == 0  # fp32 weights: nothing at the half rate
    half = plan_run(compose_run([*BASE, "model.weight_dtype=bf16"]), device("4090"))
    f = half.phases[0][1]
    assert 0 < f.step.half_flops <= f.step.flops
    d = f.device
    expected = (f.step.flops - f.step.half_flops) / (d.peak_flops("32-true") * d.efficiency_for("32-true")) + (
        f.step.half_flops / (d.peak_flops("bf16-mixed") * d.efficiency_for("bf16-mixed"))
    )
    assert f.precision == "32-true" and f.step_seconds == pytest.approx(expected)


def test_full_fine_tune_times_convolution_weight_gradients_at_their_rate():
    """A full fine-tune's convolution weight gradients (which LoRA steps never run) at the device's measured rate for
    them: on this CPU 0.26 of the peak, not the 0.67 of the rest (SD 1.5 full 256²: -30 % -> -17 % per CPU second)."""
    full = plan_run(compose_run([*BASE, "adapter=full"]), device("cpu")).phases[0][1]
    lora = plan_run(compose_run(BASE), device("cpu")).phases[0][1]
    assert lora.step.weight_grad_flops == 0
    assert 0 < full.step.weight_grad_flops < full.step.flops
    d = full.device
    rest, wgrad = full.step.flops - full.step.weight_grad_flops, full.step.weight_grad_flops
    expected = rest / (d.peak_flops("32-true") * d.efficiency) + wgrad / (d.peak_flops("32-true") * 0.26)
    assert full.flop_seconds == pytest.approx(expected)
    gpu_plan = plan_run(compose_run([*BASE, "adapter=full"]), device("4090"))  # no figure of its own
    gpu = gpu_plan.phases[0][1]
    assert gpu.flop_seconds == pytest.approx(gpu.seconds(gpu.step.flops))
    from sdft.run.plan.report import report

    shown = f"{full.step.weight_grad_flops / 1e9:.1f} of them convolution weight gradients, at 26% of the peak"
    assert shown in report(plan_run(compose_run([*BASE, "adapter=full"]), device("cpu")))
    assert "weight gradients" not in report(gpu_plan)


def test_full_fine_tune_heap_term_counts_the_activations_it_freed():
    """A full fine-tune peaks at its optimizer step, after its activations are freed, but they were made: the C heap
    term is taken from the most transient memory of the step (SD 1.5 full 256², RSS: -16 % -> -8 %)."""
    full = plan_run(compose_run([*BASE, "adapter=full"]), device("cpu")).phases[0][1]
    s = full.step
    assert s.transient_peak > s.activations + s.workspace
    assert full.step_heap == int(full.device.heap_share * s.transient_peak) > 0


def test_sampling_peak_and_time_follow_the_largest_sampling_call():
    """The generation-time peak is traced at the most images one sampling call renders: a grid row renders one image
    per validation seed, the likeness meter (on by default) up to likeness.batch_size of its 10 samples in one call;
    the meter's final measurement is counted in the run's time (a bug: the plan traced one image and left the meter
    out, while the default meter samples 10 images a call)."""
    from sdft.run.plan.forecast import likeness_images, sampling_batch

    def phase(*overrides):
        cfg, f = plan_run(compose_run([*BASE, *overrides]), device("cpu")).phases[0]
        return cfg, f

    one_cfg, one = phase("callbacks.likeness.enabled=false")
    assert sampling_batch(one_cfg) == 1 and one.generation.images == 1
    assert one.total_seconds(one_cfg)["likeness"] == 0
    seeds_cfg, seeds = phase("callbacks.likeness.enabled=false", "callbacks.validation_seeds=[0,1,2]")
    assert seeds.generation.images == 3 and seeds.generation.peak > one.generation.peak
    assert seeds.generation.step_flops == one.generation.step_flops  # per image
    meter_cfg, meter = phase("callbacks.likeness.batch_size=4", "callbacks.checkpoint_every_n_steps=0")
    assert likeness_images(meter_cfg) == 10 and meter.generation.images == 4
    assert meter.generation.peak > seeds.generation.peak
    t = meter.total_seconds(meter_cfg)
    assert t["likeness"] == pytest.approx(meter.generation_seconds(10, meter_cfg.callbacks.validation_steps))
    assert t["total"] == pytest.approx(t["train"] + t["class_images"] + t["grids"] + t["likeness"])
    every_cfg, every = phase("callbacks.likeness.max_share=0", "callbacks.checkpoint_every_n_steps=2")
    one = every.generation_seconds(10, every_cfg.callbacks.validation_steps)
    assert every.total_seconds(every_cfg)["likeness"] == pytest.approx(3 * one)  # 2 checkpoints (steps 2, 4), final


def test_fit_lowers_the_likeness_batch_where_sampling_is_the_peak():
    """Grids at 128 px after 64 px steps: the meter's 10-image sampling call outweighs the training step, so the
    first override offered is a smaller meter batch (nothing else changes), and the run then fits."""
    from sdft.run.plan.fit import fit

    base = BASE + ["callbacks.validation_resolution=128"]
    plan = plan_run(compose_run(base), device("cpu"))
    f = plan.phases[0][1]
    assert f.grid_peak > f.step_peak and f.generation.images == 10
    budget = max(f.step_peak * 1.02, f.grid_peak * 0.98) / 2**30
    result = fit(base, "config", plan, budget, device("cpu"))
    assert result.overrides[0] == "callbacks.likeness.batch_size=1"
    again = plan_run(compose_run(base + result.overrides), device("cpu"))
    assert again.phases[0][1].generation.images == 1 and again.peak <= budget * 2**30


def test_plan_accuracy_bench_runs_on_the_tiny_model(tmp_path):
    """bench/plan_accuracy.py end to end on the tiny model (its own process per case, as it runs the real ones): the
    step's memory, time, kernel time and page faults, and the sampling call's memory against the forecast's."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, str(repo / "bench/plan_accuracy.py"), "--case", "tiny-lora-64", "--threads", "1", "--grid"]
    cmd += ["--set", "callbacks.validation_steps=2", "--json", str(out)]
    subprocess.run(cmd, check=True, cwd=repo, capture_output=True, timeout=600)
    r = json.loads(out.read_text())
    assert r["measured_step_gib"] > 0 and r["step_cpu_seconds"] > 0 and r["step_minor_faults"] >= 0
    assert r["grid_images_per_call"] == 10 and r["grid_steps"] == 2  # the meter's default batch; the override
    assert r["grid_measured_gib"] > 0 and r["grid_forecast_tensors_gib"] > 0
