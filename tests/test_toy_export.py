"""`sdft toy export` of a pretraining run that continued from the exported toy base (pretraining step 6): the base's
facts are kept, the step's own added, the identifiers boosted, the weights fp16. Generation is stubbed (the export's
samples and prompt-control figures are the card's, measured by the real command)."""

from __future__ import annotations

import json
import shutil

import torch
import yaml

import sdft.toy.export as export_mod
from sdft.models.toy_weights import TOY_MODEL_DIR, load_toy_pipeline


def _continued_run(tmp_path):
    """A run folder as train.py writes it, its output the toy base itself, started from a copy of the base."""
    start = tmp_path / "start"
    shutil.copytree(TOY_MODEL_DIR, start)
    run = tmp_path / "run"
    load_toy_pipeline().save_pretrained(run / "main" / "model", safe_serialization=True)
    (run / "summary.json").write_text(
        json.dumps({"output": str(run / "main" / "model"), "steps": 40, "train_seconds": 12.5, "instance_images": 5})
    )
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"path": str(start)}, "optim": {"lr": 5e-4}}))
    logs = run / "logs" / "main"
    logs.mkdir(parents=True)
    rows = "".join(f"{s},{0.05 - s / 1000:.4f}\n" for s in range(0, 40, 2))
    (logs / "metrics.csv").write_text("step,train/loss\n" + rows)
    return start, run


def test_continued_run_keeps_the_base_facts_and_adds_its_own(tmp_path, monkeypatch):
    start, run = _continued_run(tmp_path)
    rows = [{"cls_ok": True, "colour_ok": i % 2 == 0} for i in range(4)]
    monkeypatch.setattr(export_mod, "prompt_control_rate", lambda pipe, n: (0.5, rows))
    monkeypatch.setattr(export_mod, "sample_grid", lambda pipe, path: path.write_bytes(b""))
    out = tmp_path / "card" / "model"
    facts = export_mod.export(run, out)

    before = json.loads((start / "training.json").read_text())
    assert facts["steps"] == before["steps"] and facts["decoder_refinement"] == before["decoder_refinement"]
    assert facts["prompt_control_rate_n96"] == 0.5
    assert facts["prompt_control_per_attribute_n96"] == {"cls": 1.0, "colour": 0.5}
    step = facts["continued"][-1]
    assert step["steps"] == 40 and step["lr"] == 5e-4
    assert step["before"]["prompt_control_rate_n96"] == before["prompt_control_rate_n96"]
    assert step["final_loss_mean_last_20_logged"] < 0.05
    assert json.loads((out / "training.json").read_text()) == facts
    assert (tmp_path / "card" / f"loss_curve_continued_{len(facts['continued'])}.png").stat().st_size > 0
    pipe = load_toy_pipeline(out, dtype=torch.float16)
    weight = pipe.text_encoder.get_input_embeddings().weight
    assert weight.dtype == torch.float16
    sks = pipe.tokenizer.convert_tokens_to_ids("sks</w>")
    assert abs(float(weight[sks].float().norm()) - export_mod.IDENTIFIER_NORM) < 0.05 * export_mod.IDENTIFIER_NORM
