"""bench/optimizer_step_cost.py (the plan's CPU optimizer term, sdft/run/plan/devices.py) runs at any size: below one
U-Net-sized tensor it once built an empty parameter list and failed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "optimizer_step_cost.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300)


def test_small_sizes_measure_one_tensor():
    done = run("--elements", "1000", "--small", "10")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["large"] == {"tensors": 1, "elements": 1000, "step_cpu_s": result["large"]["step_cpu_s"]}
    assert result["small"]["tensors"] == 10 and result["ns_per_element"] > 0


def test_nothing_to_measure_is_refused():
    done = run("--elements", "0")
    assert done.returncode == 2 and "--elements and --small must be at least 1" in done.stderr
