"""Hydra multirun: every job in its own folder, then one sweep summary (CSV, markdown, PNG)."""

from __future__ import annotations

import csv
import json
import os
import sys

import pytest
from PIL import Image

from helpers.config import ROOT, tiny_multirun
from helpers.processes import Concurrent, selected
from sdft.run.sweep import write_sweep_summary


def fake_job(sweep, n, rank, lr, loss):
    job = sweep / str(n)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- model=tiny\n- adapter.rank={rank}\n- optim.lr={lr}\n")
    (job / "summary.json").write_text(
        json.dumps({"final_metrics": {"val/fixed_noise_loss": loss}, "train_seconds": 1.0})
    )


def test_summary_ranks_jobs_and_plots_a_grid(tmp_path):
    for n, (rank, lr, loss) in enumerate([(4, 1e-4, 0.5), (4, 1e-3, 0.3), (8, 1e-4, 0.4), (8, 1e-3, 0.2)]):
        fake_job(tmp_path, n, rank, lr, loss)
    paths = write_sweep_summary(tmp_path)
    assert [p.name for p in paths] == ["sweep_summary.csv", "sweep_summary.md", "sweep_summary.png"]
    rows = list(csv.DictReader(open(tmp_path / "sweep_summary.csv")))
    assert [r["adapter.rank"] for r in rows] == ["4", "4", "8", "8"] and "model" not in rows[0]  # only swept keys
    table = (tmp_path / "sweep_summary.md").read_text().splitlines()
    assert "| 3 | 8 | 0.001 | 0.2 |" in table[4]  # best first
    assert Image.open(paths[2]).size[0] > 300


def test_sdft_sweep_writes_the_summary_by_hand(tmp_path, capsys):
    """`sdft sweep SWEEP_DIR` (was `python -m sdft.sweep`): the same files; a folder without finished jobs says so."""
    from sdft.cli import main

    fake_job(tmp_path / "s", 0, 4, 1e-4, 0.5)
    assert main(["sweep", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "sweep_summary.md").is_file() and "sweep_summary.csv" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["sweep", str(tmp_path / "empty")]) == 1
    assert "no finished job" in capsys.readouterr().out


def two_by_two(tiny_cache, sweep) -> list[str]:
    """`-m` over adapter.rank x optim.lr, 1 step each."""
    return tiny_multirun(tiny_cache, sweep, "optim.lr=1e-3,1e-4")


def optuna_search(tiny_cache, sweep) -> list[str]:
    """hparams_search=rank_lr: Optuna picks rank and lr for 3 trials of 2 steps."""
    return [
        sys.executable,
        "train.py",
        "model=tiny",
        "trainer=cpu",
        "trainer.enable_progress_bar=false",
        "data.resolution=64",
        "trainer.max_steps=2",
        "callbacks.validation_seeds=[]",
        "callbacks.checkpoint_every_n_steps=0",
        f"model.cache_dir={tiny_cache}",
        "hparams_search=rank_lr",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweep.dir={sweep}",
    ]


MULTIRUNS = {
    "test_two_by_two_multirun_writes_four_runs_and_the_summary": two_by_two,
    "test_optuna_search_over_rank_and_lr_minimises_the_returned_metric": optuna_search,
}


@pytest.fixture(scope="module")
def multiruns(request, tiny_cache, tmp_path_factory):
    """The selected tests' multiruns, started together (helpers/processes.py): the runs and {test: sweep dir}."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: one thread is as fast and never oversubscribes
    runs, dirs = Concurrent(), {}
    for test, command in MULTIRUNS.items():
        if selected(request, test):
            dirs[test] = tmp_path_factory.mktemp("sweep")
            runs.start(test, command(tiny_cache, dirs[test]), cwd=ROOT, timeout=600, env=env)
    yield runs, dirs
    runs.close()


def test_two_by_two_multirun_writes_four_runs_and_the_summary(multiruns):
    runs, dirs = multiruns
    test = "test_two_by_two_multirun_writes_four_runs_and_the_summary"
    proc, sweep = runs.result(test), dirs[test]
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted(p.parent.name for p in sweep.glob("*/summary.json"))
    assert jobs == ["0", "1", "2", "3"]
    assert all((sweep / j / "main" / "lora" / "pytorch_lora_weights.safetensors").is_file() for j in jobs)
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    assert {(r["adapter.rank"], r["optim.lr"]) for r in rows} == {
        ("2", "0.001"),
        ("2", "0.0001"),
        ("4", "0.001"),
        ("4", "0.0001"),
    }
    assert all(float(r["val/fixed_noise_loss"]) > 0 for r in rows)
    assert (sweep / "sweep_summary.png").is_file()


def test_optuna_search_over_rank_and_lr_minimises_the_returned_metric(multiruns):
    runs, dirs = multiruns
    test = "test_optuna_search_over_rank_and_lr_minimises_the_returned_metric"
    proc, sweep = runs.result(test), dirs[test]
    assert proc.returncode == 0, proc.stderr[-2000:]
    import yaml

    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    losses = {}
    for job in sorted(sweep.glob("*/summary.json")):
        losses[job.parent.name] = json.loads(job.read_text())["final_metrics"]["val/fixed_noise_loss"]
        overrides = (job.parent / ".hydra" / "overrides.yaml").read_text()
        assert "adapter.rank=" in overrides and "optim.lr=" in overrides  # the sweeper chose both
    assert len(losses) == 3
    assert result["best_value"] == min(losses.values())  # what train.py returned is what Optuna minimised
    assert result["best_params"]["adapter.rank"] in (4, 8, 16, 32) and 1e-5 <= result["best_params"]["optim.lr"] <= 1e-3
    assert (sweep / "sweep_summary.csv").is_file()
