"""Bad values are refused before any long work, with one clear line (issue 20, items 2, 4, 5, 8)."""

from __future__ import annotations

import logging
import shutil

import pytest

from helpers.config import EXAMPLE_SUBJECT

from sdft.errors import ConfigError
from sdft.run.train import run
from helpers.wiring import prepare_for_test


@pytest.mark.parametrize(
    "override, says",
    [
        ("callbacks.keep_last_k=0", "keep_last_k"),
        ("data.repeats=0", "data.repeats"),
        ("optim.lr=0", "optim.lr"),
        ("data.resolution=60", "multiple of 8"),
        ("callbacks.validation_resolution=100", "multiple of 8"),
        ("adapter.rank=0", "adapter.rank"),
        ("adapter.rank=-4", "adapter.rank"),
        ("adapter.kind=loha adapter.rank=0", "adapter.rank"),
        ("adapter.kind=locon adapter.conv_rank=0", "adapter.conv_rank"),
        ("adapter.alpha=-1", "adapter.alpha"),
        ("adapter.dropout=2.0", "adapter.dropout"),
        # issue 33 item 6: each found failing after the model loaded, or passing silently
        ("data.batch_size=0", r"data\.batch_size=0: must be >= 1"),
        ("trainer.accumulate_grad_batches=0", r"trainer\.accumulate_grad_batches=0: must be >= 1"),
        ("adapter.kind=oft adapter.oft_block_size=0", r"adapter\.oft_block_size=0: must be >= 1"),
        ("adapter.embedding.placeholder=sks_token optim.embedding_lr=0", r"optim\.embedding_lr=0\.0: must be > 0"),
        ("callbacks.checkpoint_every_n_steps=-5", r"callbacks\.checkpoint_every_n_steps=-5: must be >= 0"),
        (
            "optim.optimizer.betas=[0.9,1.5]",
            r"optim\.optimizer\.betas=\[0\.9, 1\.5\]: must be in \[0, 1\) for each value",
        ),
        ("optim.optimizer.weight_decay=-1", r"optim\.optimizer\.weight_decay=-1(\.0)?: must be >= 0"),
        ("loss.noise_offset=nan", r"loss\.noise_offset=nan: must be >= 0"),
        # checks once hand-written beside the schema, now its ranges
        ("trainer.max_steps=0", r"trainer\.max_steps=0: must be >= 1"),
        ("data.caption_dropout=1.0", r"data\.caption_dropout=1\.0: must be in \[0, 1\) \(a probability\)"),
        ("ema.enabled=true ema.decay=1.5", r"ema\.decay=1\.5: must be in \[0, 1\)"),
        ("ema.enabled=true ema.start_step=-1", r"ema\.start_step=-1: must be >= 0"),
        # issue 34: the class-image loss weight without class images was ignored without a word
        (
            "prior.enabled=false prior.base_prediction=true prior.loss_weight=0.5",
            r"prior\.loss_weight=0\.5 weighs the class images' loss.*prior\.base_prediction_weight \(now 1\.0\)",
        ),
        ("prior.enabled=false prior.loss_weight=2", r"prior\.loss_weight=2\.0 .*prior\.enabled=true"),
        # an optional field's error says what unset means
        ("optim.text_encoder_lr=-1", r"optim\.text_encoder_lr=-1\.0: must be >= 0 \(unset: optim\.lr;"),
    ],
    ids=lambda v: v if "=" in str(v) else "",
)
def test_bad_value_is_refused_before_the_model_loads(override, says, fast_config, monkeypatch):
    import sdft.run.wiring

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the bad value was refused")

    monkeypatch.setattr(sdft.run.wiring, "load_pipeline", no_load)
    with pytest.raises(ConfigError, match=says):
        run(fast_config(*override.split()))


def test_unknown_plus_key_is_a_config_error(fast_config):
    with pytest.raises(ConfigError, match=r"data\.foo"):
        run(fast_config("+data.foo=1"))


def test_resume_auto_with_nothing_to_continue_warns(fast_config, caplog, tmp_path):
    with caplog.at_level(logging.WARNING, logger="sdft"):
        run(fast_config("resume=auto", "trainer.max_steps=1"))
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "resume=auto" in r.getMessage()]
    assert warned and str(tmp_path / "out") in warned[0].getMessage(), [r.getMessage() for r in caplog.records]


def test_resume_auto_counts_only_run_folders(tmp_path, caplog):
    """Issue 33 item 11: a plain file beside the runs (run1.log) is not counted as an earlier run folder."""
    from sdft.run.checks import typed_config
    from sdft.run.resume import find_run

    outputs = tmp_path / "outputs"
    for name in ("run1", "run2"):
        (outputs / name).mkdir(parents=True)
    (outputs / "run1.log").write_text("a log")
    cfg = typed_config({"model": {"path": "tiny"}, "resume": "auto"})
    with caplog.at_level(logging.WARNING, logger="sdft"):
        assert find_run(cfg, outputs / "run2") is None
    warned = [r.getMessage() for r in caplog.records if "resume=auto" in r.getMessage()]
    assert warned and "1 earlier run folder(s)" in warned[0], warned


def test_kohya_toml_resolution_reaches_every_consumer(fast_config, tmp_path, caplog):
    images = tmp_path / "img" / "3_sks character"
    images.mkdir(parents=True)
    for p in sorted((EXAMPLE_SUBJECT / "face").glob("*.png"))[:2]:
        shutil.copy(p, images)
    toml = tmp_path / "data.toml"
    toml.write_text(f'[general]\nresolution = 64\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "{images}"\n')
    with caplog.at_level(logging.INFO, logger="sdft"):
        parts = prepare_for_test(
            fast_config(
                "data.resolution=512",
                f"data.kohya_toml={toml}",
                "data.instance_dir=null",
                "callbacks.fixed_noise_loss=true",
            ),
            with_logger=False,
        )
    from sdft.callbacks.fixed_noise_loss import FixedNoiseLoss

    fixed = next(c for c in parts.trainer.callbacks if isinstance(c, FixedNoiseLoss))
    assert parts.grids.resolution == 64 and fixed.resolution == 64
    assert parts.checkpoint.kohya_metadata(1, 0)["ss_resolution"] == "(64, 64)"
    assert any(str(toml) in r.getMessage() for r in caplog.records if "instance images" in r.getMessage())


def test_plus_key_is_refused_before_hydra_writes_it(tiny_cache, tmp_path):
    """`+model.token=...` stops with one line naming the key; the value is in no file (issue 20, item 9)."""
    import os
    import subprocess
    import sys

    from helpers.config import ROOT

    secret = "hf_" + "NOTaREALtokenJUSTaTEST0123"
    run_dir = tmp_path / "hydra_run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDFT_CACHE_DIR": str(tiny_cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "train.py", f"hydra.run.dir={run_dir}", f"+model.token={secret}", "trainer.max_steps=1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "model.token" in said and "Traceback" not in said, said[-2000:]
    assert secret not in said
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and secret in p.read_text(errors="replace")]
    assert not leaked, leaked


def test_every_numeric_schema_field_declares_its_range():
    """Issue 33 item 6: each int/float field (and list of them) of sdft/config.py says its valid values once, with
    `ranged`, so sdft/run/checks.py checks it before anything loads; and each default lies in its own range."""
    import dataclasses
    import typing

    from sdft.config import SdftConfig, field_range

    numeric = (int, float)
    missing, bad_default, seen, schemas = [], [], 0, [SdftConfig]
    while schemas:  # every section of the schema, nested ones (data.concepts[], phases[]) included
        schema = schemas.pop()
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
            schemas += [t for t in [hints[f.name], *args] if dataclasses.is_dataclass(t)]
            if hints[f.name] not in numeric and not (args and all(a in numeric for a in args)):
                continue
            seen += 1
            valid = field_range(f)
            if valid is None:
                missing.append(f"{schema.__name__}.{f.name}")
                continue
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            if any(v not in valid for v in (default if isinstance(default, list) else [default]) if v is not None):
                bad_default.append(f"{schema.__name__}.{f.name}={default}")
    assert seen > 60, seen
    assert not missing, f"numeric fields without a declared range: {missing}"
    assert not bad_default, f"defaults outside their own range: {bad_default}"


def test_a_phase_override_out_of_range_is_refused_naming_the_phase(fast_config, monkeypatch):
    import sdft.run.wiring

    monkeypatch.setattr(sdft.run.wiring, "load_pipeline", lambda *a, **k: pytest.fail("the model loaded first"))
    with pytest.raises(ConfigError, match=r"data\.batch_size=0 \(phase 'body'\): must be >= 1"):
        run(fast_config("phases=[{name: face}, {name: body, overrides: {data: {batch_size: 0}}}]"))
