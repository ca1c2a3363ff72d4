"""Optimizers as config (conf/optim/*.yaml, sdft/training/optimizers.py): every preset trains, LoRA+ and per-block lr make the
right parameter groups, a missing package names itself, schedule-free optimizers switch train/eval around steps."""

from __future__ import annotations

import re
import sys

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from helpers.config import CONF_DIR
from sdft.config import BlockLrConfig, OptimConfig
from sdft.errors import ConfigError
from sdft.training.optimizers import block_multiplier, split_groups
from sdft.run.train import run
from helpers.wiring import prepare_for_test

PRESETS = sorted(p.stem for p in (CONF_DIR / "optim").glob("*.yaml"))
QUIET = ["callbacks.validation_seeds=[]", "callbacks.fixed_noise_loss=false", "trainer.max_steps=2"]
CLASSES = {
    "adamw": "AdamW",
    "adamw8bit": "AdamW8bit",
    "custom": "AdamW",  # no node of its own: AdamW unless optim.optimizer is given
    "prodigy": "Prodigy",
    "adafactor": "Adafactor",
    "lion": "Lion",
    "schedulefree_adamw": "AdamWScheduleFree",
    "came": "CAME",
}


def lora_values(module) -> dict:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_trains(preset, fast_config):
    assert set(PRESETS) == set(CLASSES), "a new conf/optim preset needs an entry in CLASSES"
    parts = prepare_for_test(fast_config(f"optim={preset}", *QUIET))
    before = lora_values(parts.module)
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    optimizer = parts.trainer.optimizers[0]
    assert type(optimizer).__name__ == CLASSES[preset]
    assert parts.trainer.global_step == 2
    after = lora_values(parts.module)
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before), f"optim={preset} changed no weight"


def test_schedulefree_steps_in_train_mode_and_rests_in_eval_mode(fast_config, monkeypatch):
    import schedulefree

    calls = []
    real_train, real_eval, real_step = (
        schedulefree.AdamWScheduleFree.train,
        schedulefree.AdamWScheduleFree.eval,
        schedulefree.AdamWScheduleFree.step,
    )
    monkeypatch.setattr(schedulefree.AdamWScheduleFree, "train", lambda self: (calls.append("train"), real_train(self)))
    monkeypatch.setattr(schedulefree.AdamWScheduleFree, "eval", lambda self: (calls.append("eval"), real_eval(self)))
    monkeypatch.setattr(
        schedulefree.AdamWScheduleFree,
        "step",
        lambda self, closure=None: (calls.append("step"), real_step(self, closure))[1],
    )
    parts = prepare_for_test(fast_config("optim=schedulefree_adamw", *QUIET, "trainer.max_steps=3"))
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    assert calls == ["train", "step", "eval"] * 3
    assert not parts.trainer.optimizers[0].param_groups[0]["train_mode"]  # the saved LoRA holds the averaged weights


def test_a_missing_optimizer_package_is_named_before_training(fast_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "prodigyopt", None)  # import prodigyopt now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install prodigyopt"):
        run(fast_config("optim=prodigy"))
    with pytest.raises(ConfigError, match="_partial_: true"):
        run(fast_config("+optim.optimizer={_target_: torch.optim.SGD}"))


def test_named_presets_take_the_target_route(fast_config, monkeypatch):
    """adamw and adamw8bit are `_target_` nodes like every preset (one route): adamw8bit without bitsandbytes is refused
    before training, naming the pip package, like any other optimizer; AdamW gets the preset's betas/eps/weight_decay
    (overridden as optim.optimizer.*), and the schema's default (optim.optimizer unset) is that same AdamW."""
    from sdft.run.train import as_config
    from sdft.training.optimizers import learning_rates, optimizer_node

    node = optimizer_node(as_config(fast_config("optim.optimizer.weight_decay=0.5", "optim.optimizer.eps=1e-6")).optim)
    assert node == {
        "_target_": "torch.optim.AdamW",
        "_partial_": True,
        "betas": [0.9, 0.999],
        "eps": 1e-6,
        "weight_decay": 0.5,
        "fused": None,
    }
    assert optimizer_node(OptimConfig()) == optimizer_node(as_config(fast_config()).optim)
    assert optimizer_node(fast_config("optim=adamw8bit").optim)["_target_"] == "bitsandbytes.optim.AdamW8bit"
    # AdamW's fused kernel: on for parameters on a GPU unless the node says false; never on CPU unless it says true
    assert optimizer_node(OptimConfig(), on_gpu=True)["fused"] is True
    assert optimizer_node(OptimConfig(optimizer={**node, "fused": False}), on_gpu=True)["fused"] is None
    assert optimizer_node(OptimConfig(optimizer={**node, "fused": True}))["fused"] is True
    assert learning_rates(OptimConfig(lr=1.0, text_encoder_lr=0.5)) == {
        "unet": 1.0,
        "text_encoder": 0.5,
        "text_encoder_2": 0.5,
        "embedding": 1.0,
    }
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes(.optim) now raises ImportError
    monkeypatch.setitem(sys.modules, "bitsandbytes.optim", None)
    with pytest.raises(ConfigError, match=r"pip install bitsandbytes"):
        run(fast_config("optim=adamw8bit"))


def test_any_optimizer_class_by_target(fast_config):
    sgd = "+optim.optimizer={_target_: torch.optim.SGD, _partial_: true, momentum: 0.9}"
    parts = prepare_for_test(fast_config("optim=custom", sgd, *QUIET))
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    opt = parts.trainer.optimizers[0]
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 5e-5]  # optim.lr, optim.text_encoder_lr (conf/optim/custom)
    # on a preset with a node, the dict merges into it: AdamW's betas/eps would reach SGD; refused at the start
    with pytest.raises(ConfigError, match=r"torch\.optim\.SGD takes no \['betas', 'eps'\].*optim=custom"):
        run(fast_config(sgd))


@pytest.mark.parametrize(
    "old, new",
    [
        ("optim.weight_decay=0.05", "optim.optimizer.weight_decay"),
        ("optim.betas=[0.9,0.99]", "optim.optimizer.betas"),
        ("optim.eps=1e-6", "optim.optimizer.eps"),
        ("optim.fused=false", "optim.optimizer.fused"),
        ("optim.name=adamw8bit", "optim=adamw8bit"),
    ],
)
def test_a_moved_optimizer_key_names_its_new_key(old, new):
    """The keys that fed the old AdamW shorthand are gone; given one, the run stops at start naming the new key (never
    silently dropped): on the command line (plan, UI), as `+key`, in a phase's overrides or a dict config."""
    from sdft.run.checks import check_overrides, typed_config
    from sdft.run.phases import phase_configs
    from sdft.run.plan.compose import compose_run

    said = re.escape(f"{old.split('=')[0]} is gone: write ") + f".*{re.escape(new)}"
    for overrides in ([old], [f"+{old}"]):
        with pytest.raises(ConfigError, match=said):
            compose_run(overrides)  # sdft plan's, the UI's and the doctor's composition
    key, value = old.split("=")
    section = {key.split(".")[1]: yaml.safe_load(value)}
    with pytest.raises(ConfigError, match=said):
        typed_config({"optim": section})  # a dict config, Hydra's `+key` check (sdft/run/checks.py)
    phased = typed_config({"phases": [{"name": "face", "overrides": {"optim": section}}]})
    with pytest.raises(ConfigError, match="phase 'face': " + said):
        phase_configs(phased)
    check_overrides(["optim.optimizer.weight_decay=0.05", "optim=adamw8bit", "+optim.lr=1e-5"])  # the new keys pass


def test_train_py_names_the_new_key_of_a_moved_one():
    """`python train.py optim.weight_decay=0.05`: one line naming optim.optimizer.weight_decay, exit code 1."""
    import subprocess

    from helpers.config import ROOT

    proc = subprocess.run(
        [sys.executable, "train.py", "optim.weight_decay=0.05"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "write optim.optimizer.weight_decay instead" in said, said[-2000:]
    assert "Traceback" not in said


def test_a_run_saved_before_the_move_reads_on_todays_schema():
    """`sdft eval checkpoints` reads old runs: their optim.name/betas/eps/weight_decay/fused are left out."""
    from sdft.run.likeness_posthoc import full_config

    old = {"optim": {"name": "adamw", "lr": 2e-4, "weight_decay": 0.01, "betas": [0.9, 0.999], "eps": 1e-8}}
    cfg = full_config(OmegaConf.create({**old, "optim": {**old["optim"], "fused": None, "optimizer": {}}}))
    assert cfg.optim.lr == 2e-4 and "name" not in cfg.optim and "weight_decay" not in cfg.optim


@pytest.fixture
def lora_module(fast_config):
    return prepare_for_test(fast_config()).module


def groups_of(module, **optim) -> dict[str, dict]:
    cfg = OptimConfig(lr=1.0, text_encoder_lr=0.5, **optim)
    module.optim_cfg = cfg
    groups = split_groups(module.param_groups(), module.named_parameters(), module.unet, cfg)
    names = {id(p): n for n, p in module.named_parameters()}
    out = {g["name"]: {"lr": g["lr"], "names": [names[id(p)] for p in g["params"]]} for g in groups}
    assert len(out) == len(groups), "two groups share a name"
    assert sum(len(g["params"]) for g in groups) == len(module.trained_names())  # every trained parameter once
    return out


def test_defaults_keep_the_two_groups(lora_module):
    assert {k: v["lr"] for k, v in groups_of(lora_module).items()} == {"unet": 1.0, "text_encoder": 0.5}


def test_loraplus_puts_the_b_matrices_in_their_own_groups(lora_module):
    groups = groups_of(lora_module, loraplus_ratio=16.0)
    assert {k: v["lr"] for k, v in groups.items()} == {
        "unet": 1.0,
        "unet_lora_B": 16.0,
        "text_encoder": 0.5,
        "text_encoder_lora_B": 8.0,
    }
    for name, group in groups.items():
        assert all((".lora_B." in n) == name.endswith("_lora_B") for n in group["names"])


def test_per_block_lr_by_diffusers_block(lora_module):
    groups = groups_of(
        lora_module, unet_block_lr=BlockLrConfig(down=[0.1, 0.2, 0.3, 0.4], mid=0.5, up=[1.0, 2.0, 3.0, 4.0])
    )
    lrs = {k: v["lr"] for k, v in groups.items()}
    # the tiny U-Net has attention in down blocks 0-2, the mid block, up blocks 1-3 (LoRA targets attn1/attn2)
    assert lrs == {
        "unet/down.0": 0.1,
        "unet/down.1": 0.2,
        "unet/down.2": 0.3,
        "unet/mid": 0.5,
        "unet/up.1": 2.0,
        "unet/up.2": 3.0,
        "unet/up.3": 4.0,
        "text_encoder": 0.5,
    }
    assert all(n.startswith("unet.down_blocks.1.") for n in groups["unet/down.1"]["names"])


def test_per_block_lr_by_kohya_block(lora_module):
    unet = lora_module.unet
    cfg = BlockLrConfig(down=[float(i) for i in range(12)], mid=-1.0, up=[float(100 + i) for i in range(12)])
    # SD 1.x numbering: IN01/02 = down_blocks.0 layers, IN03 its downsampler, IN04/05 = down_blocks.1 layers, ...
    assert (
        block_multiplier(
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.default.weight", unet, cfg
        )
        == 4.0
    )
    assert block_multiplier("unet.down_blocks.2.downsamplers.0.conv.weight", unet, cfg) == 9.0
    assert block_multiplier("unet.conv_in.weight", unet, cfg) == 0.0
    assert block_multiplier("unet.up_blocks.2.attentions.1.proj_in.weight", unet, cfg) == 107.0  # OUT07
    assert block_multiplier("unet.up_blocks.0.upsamplers.0.conv.weight", unet, cfg) == 102.0  # OUT02
    assert block_multiplier("unet.mid_block.attentions.0.proj_in.weight", unet, cfg) == -1.0
    assert block_multiplier("unet.time_embedding.linear_1.weight", unet, cfg) == 1.0


def test_per_block_lr_of_the_wrong_length_is_refused(lora_module):
    with pytest.raises(ConfigError, match=r"needs 4 \(one per down block\) or 12"):
        groups_of(lora_module, unet_block_lr=BlockLrConfig(down=[1.0, 2.0]))
