"""Every config file composes onto the typed schema; typos and wrong types fail at start with the key named."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from helpers.config import CONF_DIR, ROOT, compose_config
from sdft.config import AdapterKind, LoggerKind

GROUPS = ["model", "data", "adapter", "phase", "prior", "optim", "trainer", "logger", "callbacks", "eval"]
GROUP_OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def test_every_group_has_options():
    assert {g for g, _ in GROUP_OPTIONS} == set(GROUPS)
    assert {"quickstart", "lora_attn"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("group,option", GROUP_OPTIONS)
def test_group_option_composes(group, option):
    cfg = compose_config([f"{group}={option}"])
    assert OmegaConf.get_type(cfg[group]).__name__.endswith("Config")  # typed node, not a plain dict
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def instantiate_parts(cfg, pipe, tmp_path) -> None:
    """Build what the config names with the run's own wiring (sdft/run/wiring.py), as far as possible offline on CPU:
    adapter, module, optimizer, logger, trainer."""
    from sdft.families import family_parts
    from sdft.run.wiring import attach_adapters, build_module, build_trainer

    cfg.trainer.merge_with(dict(accelerator="cpu", devices=1, strategy="auto", num_nodes=1))  # GPU configs, on CPU
    if cfg.logger.kind == LoggerKind.tensorboard:
        cfg.logger.kind = "csv"
    family = family_parts(pipe, cfg)
    embedding = attach_adapters(cfg, pipe, family, previous=None)  # adapter.embedding (textual inversion)
    assert any(p.requires_grad for p in pipe.unet.parameters()) or not cfg.adapter.train_unet
    module = build_module(cfg, pipe, family, embedding)
    module.trainer = build_trainer(cfg, tmp_path, callbacks=[])
    optim = module.configure_optimizers()
    assert optim["optimizer"].param_groups, "optimizer has no parameter groups"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment, tiny_pipe_factory, tmp_path):
    cfg = compose_config([f"+experiment={experiment}"])
    assert cfg.name == experiment
    assert cfg.adapter.kind in (AdapterKind.lora, AdapterKind.full, AdapterKind.embedding)
    instantiate_parts(cfg, tiny_pipe_factory(), tmp_path)


def test_command_line_group_override_beats_experiment():
    cfg = compose_config(["+experiment=lora_attn", "model=tiny"])
    assert cfg.model.path == "tiny"


@pytest.mark.parametrize(
    "override,needle",
    [
        ("data.instance_dirr=x", "instance_dirr"),
        ("trainer.max_steps=many", "max_steps"),
        ("adapter.kind=lorax", "lorax"),
        ("model.weight_dtype=fp8", "fp8"),
    ],
)
def test_bad_override_fails_with_key_named(override, needle):
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)) as err:
        compose_config([override])
    text = str(err.value) + str(err.value.__cause__ or "")
    assert needle in text


def test_forced_new_key_is_rejected_before_training():
    """Hydra lets `+data.x=1` through composition; run() re-validates against the schema before any work."""
    from sdft.run.train import as_config

    from sdft.errors import ConfigError

    cfg = compose_config(["+data.unknown_key=1"])
    with pytest.raises(ConfigError, match="unknown_key"):  # an SdftError: train.py prints one line, no traceback
        as_config(cfg)


def test_typo_in_yaml_file_fails(tmp_path):
    bad = tmp_path / "conf"
    bad.mkdir()
    (bad / "config.yaml").write_text(
        "defaults:\n  - sdft_schema\n  - _self_\ndata:\n  instance_prompt: x\n  resolutoin: 64\n"
    )
    from hydra import compose, initialize_config_dir

    with pytest.raises(ConfigCompositionException) as err, initialize_config_dir(str(bad), version_base="1.3"):
        compose("config")
    assert "resolutoin" in str(err.value) + str(err.value.__cause__)


def test_cli_reports_unknown_key_without_traceback():
    proc = subprocess.run(
        [sys.executable, "train.py", "data.instance_dirr=x"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "instance_dirr" in proc.stderr


def test_the_quickstart_samples_the_toy_at_its_guidance_everywhere():
    """Grids, class images and `sdft eval` of the toy quickstart all sample at the toy base's CFG scale (its model
    card's 3.0): SD's 7.5 garbles its 32 px images."""
    from sdft.toy.control import GUIDANCE

    cfg = compose_config(["+experiment=quickstart"])
    assert cfg.callbacks.validation_guidance == cfg.prior.generation_guidance == cfg.eval.guidance == GUIDANCE
