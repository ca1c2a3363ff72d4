"""Issue 32 item 4: a multirun's jobs in parallel processes through Hydra launchers (conf/hydra/launcher/): submitit's
local executor (what runs SLURM jobs, on this machine) and local_gpus (joblib, one worker per GPU, each worker on its
own CUDA_VISIBLE_DEVICES); the sweep summary collects the jobs either way."""

from __future__ import annotations

import csv
import os
import sys

import pytest

from helpers.config import ROOT, tiny_multirun
from helpers.processes import Concurrent, selected
from sdft.run.sweep import claim_gpu, visible_gpus


LAUNCHERS = {
    "test_submitit_local_runs_each_job_in_its_own_process": (
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=20",
    ),
    "test_local_gpus_gives_each_worker_its_own_gpu": ("hydra/launcher=local_gpus",),
}


@pytest.fixture(scope="module")
def sweeps(request, tiny_cache, tmp_path_factory):
    # two made-up GPU ids: on this CPU machine CUDA_VISIBLE_DEVICES only shows which worker claimed which
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "7,9"}
    runs, dirs = Concurrent(), {}
    for test, launcher in LAUNCHERS.items():
        if selected(request, test):
            dirs[test] = tmp_path_factory.mktemp("sweep")
            runs.start(test, tiny_multirun(tiny_cache, dirs[test], *launcher), cwd=ROOT, timeout=600, env=env)
    yield runs, dirs
    runs.close()


def both_jobs_summarised(sweep) -> None:
    assert sorted(p.parent.name for p in sweep.glob("*/summary.json")) == ["0", "1"]
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    assert sorted(r["adapter.rank"] for r in rows) == ["2", "4"]
    assert all(float(r["val/fixed_noise_loss"]) > 0 for r in rows)


@pytest.mark.slow  # the two multiruns of two tiny jobs each take about a minute on 2 contended cores
def test_submitit_local_runs_each_job_in_its_own_process(sweeps):
    runs, dirs = sweeps
    test = "test_submitit_local_runs_each_job_in_its_own_process"
    proc, sweep = runs.result(test), dirs[test]
    assert proc.returncode == 0, proc.stderr[-3000:]
    both_jobs_summarised(sweep)
    jobs = [p for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]  # beside submitit's "%j" staging folder
    assert len(jobs) == 2  # submitit's local job ids are the job processes' pids: two processes


@pytest.mark.slow
def test_local_gpus_gives_each_worker_its_own_gpu(sweeps):
    runs, dirs = sweeps
    test = "test_local_gpus_gives_each_worker_its_own_gpu"
    proc, sweep = runs.result(test), dirs[test]
    assert proc.returncode == 0, proc.stderr[-3000:]
    both_jobs_summarised(sweep)
    logs = " ".join((sweep / j / "train.log").read_text() for j in ("0", "1"))
    claimed = sorted(w for w in ("GPU 7", "GPU 9") if w in logs)
    assert claimed == ["GPU 7", "GPU 9"], logs[-2000:]  # n_jobs = 2 GPUs, a worker process on each
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr


def test_claim_gpu_takes_a_free_gpu_per_process(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"]
    assert claim_gpu(str(tmp_path)) == "3" and claim_gpu(str(tmp_path)) == "3"  # kept for the process's life
    import subprocess

    other = sys.executable, "-c", f"from sdft.run.sweep import claim_gpu; print(claim_gpu({str(tmp_path)!r}))"
    out = subprocess.run(other, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "5", out.stderr  # another process gets the other GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == [] and claim_gpu(str(tmp_path / "cpu")) == ""
