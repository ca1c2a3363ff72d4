"""Phases: continue / stack / merge give the right adapter sets, and the results load in diffusers as trained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.compare import render
from sdft.adapters.lora import adapter_names
from sdft.errors import ConfigError
from sdft.run.train import as_config, checked_phases, fit, run
from sdft.run.wiring import prepare

TWO_PHASES = [
    "+experiment=dual_phase",
    "model=tiny",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "phases.0.overrides.trainer.max_steps=3",
    "phases.1.overrides.trainer.max_steps=3",
    "prior=none",
    "callbacks.validation_seeds=[]",
    "logger=none",
    "phases.0.overrides.optim.lr=1e-2",
    "phases.1.overrides.optim.lr=1e-2",
]


def train_phases(fast_config, *overrides):
    """Run the phases like run() does, but hand back the in-memory pipeline and the phase summaries."""
    cfg = as_config(fast_config(*TWO_PHASES, *overrides))
    pipe, previous, summaries = None, None, []
    for phase_cfg, data in zip(*checked_phases(cfg)):
        parts = prepare(phase_cfg, data, pipe, previous)
        summaries.append(fit(parts))
        pipe, previous = parts.pipe, phase_cfg.phase.name
    return pipe, summaries


def trainable_adapters(model) -> set[str]:
    return {
        n.split(".lora_A.")[1].split(".")[0] for n, p in model.named_parameters() if ".lora_A." in n and p.requires_grad
    }


def load_both(tiny_pipe_factory, summaries, weights=(1.0, 1.0)):
    fresh = tiny_pipe_factory()
    for s in summaries:
        fresh.load_lora_weights(s["output"], adapter_name=s["phase"])
    fresh.set_adapters([s["phase"] for s in summaries], adapter_weights=list(weights)[: len(summaries)])
    return fresh


def test_stack_freezes_phase_one_and_equals_both_loras_in_diffusers(fast_config, tiny_pipe_factory):
    pipe, summaries = train_phases(fast_config)
    for model in (pipe.unet, pipe.text_encoder):
        assert set(adapter_names(model)) == {"face", "default"}
        assert trainable_adapters(model) == {"default"}
    assert any(".ff.net." in n for n, p in pipe.unet.named_parameters() if p.requires_grad)  # phase 2 targets ff
    assert not any(".ff.net." in n and ".face." in n for n, _ in pipe.unet.named_parameters())  # phase 1 did not
    trained = render(pipe)
    base = render(tiny_pipe_factory())
    both = render(load_both(tiny_pipe_factory, summaries))
    assert np.abs(trained - base).max() > 1e-3
    assert np.abs(both - trained).max() <= 1e-4
    face_only = render(load_both(tiny_pipe_factory, summaries[:1]))
    assert np.abs(face_only - both).max() > 1e-4  # phase 2 adds something of its own


def test_merge_puts_phase_one_into_the_base(fast_config, tiny_pipe_factory):
    base_weights = {n: p.clone() for n, p in tiny_pipe_factory().unet.named_parameters()}
    pipe, summaries = train_phases(fast_config, "phases.1.start=merge")
    assert adapter_names(pipe.unet) == ["default"]
    changed = [
        n
        for n, p in pipe.unet.named_parameters()
        if ".base_layer." in n and not torch.equal(p, base_weights[n.replace(".base_layer", "")])
    ]
    assert changed and all(".attn" in n for n in changed)  # phase 1's attention delta is in the base now
    assert np.abs(render(load_both(tiny_pipe_factory, summaries)) - render(pipe)).max() <= 1e-4


def test_continue_keeps_training_the_same_adapter(fast_config):
    pipe, summaries = train_phases(fast_config, "phases.1.start=continue")
    assert adapter_names(pipe.unet) == ["default"] and trainable_adapters(pipe.unet) == {"default"}
    # continue keeps phase 1's targets: no feed-forward LoRA appears
    assert not any(".ff.net." in n for n, _ in pipe.unet.named_parameters() if "lora_" in n)
    assert summaries[1]["parameters"]["unet"]["trainable"] == summaries[0]["parameters"]["unet"]["trainable"]


def test_run_writes_each_phase_folder_and_a_combined_summary(fast_config, tmp_path):
    summary = run(fast_config(*TWO_PHASES))
    assert [p["phase"] for p in summary["phases"]] == ["face", "body"]
    for phase in ("face", "body"):
        assert (tmp_path / "out" / phase / "lora" / "pytorch_lora_weights.safetensors").is_file()
        assert (tmp_path / "out" / phase / "summary.json").is_file()


@pytest.mark.parametrize(
    "override,message",
    [
        ("phases.0.start=stack", "no previous adapter"),
        ("+phases.1.overrides.model={path: x}", "not allowed"),
        ("phases.1.name=face", "unique"),
    ],
)
def test_bad_phase_configs_fail_before_training(fast_config, override, message):
    with pytest.raises(ConfigError, match=message):
        run(fast_config(*TWO_PHASES, override))


def test_typo_inside_phase_overrides_fails(fast_config):
    with pytest.raises(Exception, match="instance_dirr"):
        run(fast_config(*TWO_PHASES, "+phases.1.overrides.data.instance_dirr=x"))
