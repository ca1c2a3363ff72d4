"""bench/sdxl_step.py (the SDXL step benchmark) runs the framework's SDXL step end to end: on the tiny SDXL here, the
real SDXL architecture only by hand (docs/benchmarks.md), because it needs ~7 GB and minutes per step on a CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_sdxl_step_bench_runs_on_the_tiny_sdxl(tmp_path):
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "bench/sdxl_step.py", "--model", "sdxl_tiny", "--resolution", "64", "--steps", "1"]
    cmd += ["--grad-checkpointing", "--optim", "adamw8bit", "--train-text-encoder", "--out", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text().splitlines()[-1])
    assert result["framework"]["s_per_step"] > 0 and result["framework"]["peak_rss_mb"] > 0
    assert all(result["trainable_params"][p] > 0 for p in ("unet", "text_encoder", "text_encoder_2"))
    assert result["framework_train_modes"] == {"unet": True, "text_encoder": True, "vae": False}
    assert "sdxl_tiny 64px b1 lora_attn" in done.stdout
