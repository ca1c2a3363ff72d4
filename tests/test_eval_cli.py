"""`sdft eval` on finished runs, what a run folder's phases mean as targets, and errors for people."""

from __future__ import annotations

import argparse
import csv
import json
import math

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from sdft.cli import main as sdft_main
from sdft.errors import ConfigError, SdftError
from sdft.cli.eval import register, run_from_args
from sdft.evaluation.targets import run_targets
from sdft.run.train import run

QUICK = ["--num-prompts", "2", "--seeds", "0,1", "--steps", "2", "--clip-model", "tiny", "--dino-model", "tiny"]


def fake_run(root, phases):
    """A run folder with config.yaml, summary.json and phase outputs (no training)."""
    root.mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create({"name": "r", "model": {"path": "tiny"}, "eval": {"label": None}}), root / "config.yaml"
    )
    summaries = []
    for name, kind, start in phases:
        out = root / name / ("model" if kind == "full" else "lora/pytorch_lora_weights.safetensors")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.mkdir() if kind == "full" else out.write_bytes(b"x")
        summaries.append(
            {
                "phase": name,
                "adapter": kind,
                "start": start,
                "output": str(out),
                "steps": 3,
                "parameters": {"unet": {"trainable": 1}, "text_encoder": {"trainable": 0}},
            }
        )
    (root / "summary.json").write_text(json.dumps({"phases": summaries} if len(phases) > 1 else summaries[0]))
    return root


def test_phases_become_targets(tmp_path):
    run_dir = fake_run(tmp_path / "a", [("db", "full", "fresh"), ("lora", "lora", "fresh")])
    db, both = run_targets(run_dir, all_phases=True)
    assert (db.kind, db.loras, db.model) == ("full", [], str(run_dir / "db" / "model"))
    assert (
        both.kind == "full+lora"
        and both.model == db.model
        and both.loras[0].endswith("lora/pytorch_lora_weights.safetensors")
    )
    assert [s["phase"] for s in both.phases] == ["db", "lora"]  # its cost holds both trainings
    stacked = fake_run(tmp_path / "b", [("face", "lora", "fresh"), ("body", "lora", "stack")])
    last = run_targets(stacked)[0]
    assert (last.label, last.kind, len(last.loras)) == ("body", "lora", 2) and last.model == "tiny"
    assert run_targets(stacked, phase="face")[0].loras == [
        str(stacked / "face" / "lora" / "pytorch_lora_weights.safetensors")
    ]


def test_run_folder_errors_are_for_people(tmp_path):
    with pytest.raises(ConfigError, match="no such run folder"):
        run_targets(tmp_path / "missing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("name: x\n")
    with pytest.raises(ConfigError, match="has not finished"):
        run_targets(tmp_path / "half")
    with pytest.raises(ConfigError, match="no phase 'x'"):
        run_targets(fake_run(tmp_path / "c", [("main", "lora", "fresh")]), phase="x")


@pytest.fixture
def finished_run(fast_config, tmp_path):
    run(fast_config("optim.lr=1e-2", "logger=none", "callbacks.validation_seeds=[]"))
    return tmp_path / "out"


def test_sdft_eval_scores_a_run_and_its_base(finished_run, tmp_path, capsys):
    out = tmp_path / "eval"
    assert sdft_main(["eval", str(finished_run), "--with-base", "--out", str(out), *QUICK]) == 0
    rows = {r["label"]: r for r in csv.DictReader(open(out / "report.csv"))}
    assert set(rows) == {"real images", "base", "sdft"}
    tuned, base = rows["sdft"], rows["base"]
    for key in (
        "dino",
        "clip_i",
        "clip_t",
        "pres",
        "div",
        "fidelity",
        "drift",
        "infer_s",
        "infer_s_lora",
        "infer_s_fused",
    ):
        assert math.isfinite(float(tuned[key])), key
    assert float(base["drift"]) == 0.0 and float(tuned["drift"]) > 0
    assert float(tuned["fidelity"]) < float(base["fidelity"])  # it learnt the instance images (lr 1e-2)
    assert -1 <= float(tuned["clip_t"]) <= 1 and -1 <= float(tuned["dino"]) <= 1
    assert int(tuned["trainable_params"]) > 0 and float(tuned["adapter_mb"]) > 0 and float(tuned["train_seconds"]) > 0
    info = json.loads((out / "sdft" / "eval.json").read_text())
    assert len(info["prompts"]) == 2 and info["seeds"] == [0, 1]
    for name in ("report.md", "grid.png", "report_dino.png", "sdft/samples.png", "sdft/classes.png"):
        assert (out / name).is_file(), name
    assert str(out / "report.md") in capsys.readouterr().out


def test_sdft_eval_errors(finished_run, tmp_path, capsys):
    assert sdft_main(["eval", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    save_file(
        {
            "lora_unet_nowhere.lora_down.weight": torch.zeros(4, 8),
            "lora_unet_nowhere.lora_up.weight": torch.zeros(8, 4),
        },
        str(bad),
    )
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["eval", str(finished_run), "--lora", str(bad), "--out", str(tmp_path / "e"), *QUICK])
    with pytest.raises(SdftError, match="nowhere"):  # a LoRA that does not fit the base: named, not ignored
        run_from_args(args)


def test_sdft_eval_a_model_and_lora_without_a_run(finished_run, tmp_path, tiny_cache):
    from helpers.config import EXAMPLE_SUBJECT

    out = tmp_path / "m"
    lora = finished_run / "main" / "lora"
    assert (
        sdft_main(
            [
                "eval",
                "--model",
                "tiny",
                "--lora",
                str(lora),
                "--instance-dir",
                str(EXAMPLE_SUBJECT),
                "--instance-prompt",
                "photo of sks character",
                "--class-prompt",
                "photo of a character",
                "--with-base",
                "--out",
                str(out),
                *QUICK,
            ]
        )
        == 0
    )
    rows = {r["label"]: r for r in csv.DictReader(open(out / "report.csv"))}
    assert list(rows) == ["real images", "base", "main"]  # the LoRA is named as sdft generate names it
    assert float(rows["main"]["drift"]) > 0 and float(rows["main"]["adapter_mb"]) > 0
    assert "train_seconds" not in rows["main"]  # no run: no training cost to report


def test_sdft_eval_needs_a_run_or_a_model(tmp_path, capsys):
    assert sdft_main(["eval"]) == 2
    assert "give a run folder" in capsys.readouterr().err
    assert sdft_main(["eval", "--model", "tiny"]) == 2
    assert "--instance-dir" in capsys.readouterr().err
    assert sdft_main(["eval", "--model", "tiny", "--instance-dir", ".", "--lora", str(tmp_path / "x.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_eval_compare_reruns_the_comparison_report_from_the_command_line(tmp_path, capsys):
    """`sdft eval compare SWEEP` (the +experiment=compare report again; was `python -m sdft.evaluation.compare`):
    a folder without finished jobs is one line."""
    assert sdft_main(["eval", "compare", str(tmp_path)]) == 2
    assert "no finished job" in capsys.readouterr().err
