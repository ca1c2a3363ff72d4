"""+experiment=compare: the variants compose as meant, and the multirun writes the whole report on the tiny model."""

from __future__ import annotations

import csv
import os
import sys

import pytest
from PIL import Image

from helpers.config import ROOT, compose_config
from helpers.processes import Concurrent, selected
from sdft.config import AdapterKind
from sdft.run.phases import phase_configs
from sdft.run.train import as_config


def test_variants_compose_with_one_budget():
    kinds = {}
    for variant in ("lora_attn", "lora_attn_ff", "dreambooth", "textual_inversion", "pivotal"):
        cfg = as_config(
            compose_config(["+experiment=compare", "model=tiny", f"variant={variant}", "trainer.max_steps=7"])
        )
        phases = phase_configs(cfg)
        kinds[variant] = [(p.phase.name, p.adapter.kind, tuple(p.adapter.unet_targets)) for p in phases]
        assert all(p.trainer.max_steps == 7 and p.seed == cfg.seed and p.prior.enabled for p in phases)
        assert cfg.eval.label == variant
    assert kinds["lora_attn"] == [("main", AdapterKind.lora, ("attn1", "attn2"))]
    assert kinds["lora_attn_ff"] == [("main", AdapterKind.lora, ("attn1", "attn2", "ff"))]
    assert kinds["textual_inversion"] == [("main", AdapterKind.embedding, ())]
    assert kinds["pivotal"] == [("main", AdapterKind.lora, ("attn1", "attn2"))]
    assert kinds["dreambooth"] == [
        ("dreambooth", AdapterKind.full, ()),
        ("dreambooth_lora", AdapterKind.lora, ("attn1", "attn2")),
    ]


def command(tiny_cache, sweep_dir, *extra: str) -> list[str]:
    """The compare multirun on the tiny model, everything sized down to a smoke run (2 steps per phase)."""
    return [
        sys.executable,
        "train.py",
        "+experiment=compare",
        "model=tiny",
        f"model.cache_dir={tiny_cache}",
        *extra,
        "trainer.max_steps=2",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "prior.num_class_images=2",
        "prior.generation_steps=2",
        f"data.class_dir={sweep_dir / 'class'}",
        "eval.num_prompts=2",
        "eval.steps=2",
        "eval.class_images=2",
        "eval.drift_prompts=2",
        "eval.timing_images=1",
        f"hydra.sweep.dir={sweep_dir}",
    ]


MULTIRUNS = {  # test -> the variants it sweeps (the experiment's own five, or LoRA beside LoKr)
    "test_compare_multirun_writes_the_report": [],
    "test_compare_multirun_with_a_lycoris_variant": ["variant=lora_attn,lokr"],
}


@pytest.fixture(scope="module")
def multiruns(request, tiny_cache, tmp_path_factory):
    """The selected tests' multiruns, started together (helpers/processes.py): the runs and {test: sweep dir}."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs, dirs = Concurrent(), {}
    for test, variants in MULTIRUNS.items():
        if selected(request, test):
            dirs[test] = tmp_path_factory.mktemp("compare")
            runs.start(test, command(tiny_cache, dirs[test], *variants), cwd=ROOT, timeout=600, env=env)
    yield runs, dirs
    runs.close()


@pytest.mark.slow
def test_compare_multirun_writes_the_report(multiruns):
    runs, dirs = multiruns
    test = "test_compare_multirun_writes_the_report"
    proc, sweep = runs.result(test), dirs[test]
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = sweep / "report"
    rows = {r["label"]: r for r in csv.DictReader(open(report / "report.csv"))}
    assert list(rows) == [
        "real images",
        "base",
        "lora_attn",
        "lora_attn_ff",
        "dreambooth",
        "dreambooth_lora",
        "textual_inversion",
        "pivotal",
    ]
    assert [rows[k]["kind"] for k in list(rows)[1:]] == [
        "base",
        "lora",
        "lora",
        "full",
        "full+lora",
        "embedding",
        "pivotal",
    ]
    assert [int(rows[k]["steps"]) for k in list(rows)[2:]] == [2, 2, 2, 4, 2, 2]
    assert 0 < int(rows["textual_inversion"]["trainable_params"]) < int(rows["lora_attn"]["trainable_params"])
    assert float(rows["textual_inversion"]["adapter_mb"]) < float(rows["lora_attn"]["adapter_mb"])
    assert float(rows["base"]["drift"]) == 0.0 and all(float(rows[k]["drift"]) > 0 for k in list(rows)[2:])
    assert int(rows["lora_attn_ff"]["trainable_params"]) > int(rows["lora_attn"]["trainable_params"])
    assert int(rows["dreambooth"]["trainable_params"]) > int(rows["lora_attn_ff"]["trainable_params"])
    assert rows["dreambooth"]["infer_s_fused"] == "" and float(rows["dreambooth_lora"]["infer_s_fused"]) > 0
    table = (report / "report.md").read_text()
    assert "| dreambooth_lora | full+lora |" in table and "every training phase ran 2 steps" in table
    for metric in ("dino", "clip_i", "clip_t", "pres", "div", "fidelity", "drift", "train_seconds", "infer_s_lora"):
        assert Image.open(report / f"report_{metric}.png").size[0] > 300
    grid = Image.open(report / "grid.png")
    assert grid.size[0] >= 200 + 8 * 128  # real + base + 6 variants side by side


@pytest.mark.slow
def test_compare_multirun_with_a_lycoris_variant(multiruns):
    """The compare experiment takes any adapter kind as a variant: LoRA beside LoKr (a LyCORIS kind, injected with
    peft by the generator, fused with diffusers' fuse_lora) on the tiny model, end to end to the report."""
    runs, dirs = multiruns
    test = "test_compare_multirun_with_a_lycoris_variant"
    proc, sweep = runs.result(test), dirs[test]
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["label"]: r for r in csv.DictReader(open(sweep / "report" / "report.csv"))}
    assert list(rows) == ["real images", "base", "lora_attn", "lokr"]
    assert (rows["lora_attn"]["kind"], rows["lokr"]["kind"]) == ("lora", "lokr")
    assert 0 < int(rows["lokr"]["trainable_params"]) != int(rows["lora_attn"]["trainable_params"])
    assert float(rows["lokr"]["adapter_mb"]) > 0 and float(rows["lokr"]["infer_s_fused"]) > 0
    assert float(rows["lokr"]["drift"]) > 0  # the LoKr changes the model
    assert "| lokr | lokr |" in (sweep / "report" / "report.md").read_text()
    assert Image.open(sweep / "report" / "grid.png").size[0] >= 200 + 4 * 128
