"""Two DDP processes on the CPU (gloo) train the tiny model through sdft.run.train.run and write the same LoRA file as a
single-process run.

Why a subprocess: Lightning's `ddp` strategy (what conf/trainer/ddp*.yaml select, and what users run) starts the
other ranks by re-running the command line of the main process (sys.argv) with LOCAL_RANK set. Inside pytest that
command line is pytest itself, and `python -c` cannot be re-run at all (Lightning would run `<cwd>/-c`). So the
test writes a small driver script, runs it with sys.executable, and Lightning re-runs that script as rank 1: the same
launch path as `python train.py trainer=ddp`. (`ddp_spawn` would pickle the module and callbacks into fresh
processes, so the parent's `run()` would not see the checkpoint callback's state, and it is not the path users take.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from hydra import compose, initialize_config_dir
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[1]
LORA_FILE = Path("main") / "lora" / "pytorch_lora_weights.safetensors"

DRIVER = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {repo!r})
    from hydra import compose, initialize_config_dir
    import sdft.config  # registers the schema
    from sdft.run.train import run

    with initialize_config_dir(config_dir={conf!r}, version_base="1.3"):
        cfg = compose(config_name="config", overrides=json.loads(sys.argv[1]))
    summary = run(cfg)
    print("SDFT_RANK_DONE", os.environ.get("LOCAL_RANK", "0"), summary["steps"], flush=True)
    """
)


def overrides(out: Path, cache: Path, trainer: str) -> list[str]:
    return [
        f"trainer={trainer}",
        "trainer.max_steps=3",
        "trainer.enable_progress_bar=false",
        f"output_dir={out}",
        f"model.cache_dir={cache}",
        f"data.instance_dir={REPO / 'datasets' / 'example_subject'}",
        "data.resolution=64",
        "callbacks.validation_steps=2",
        "callbacks.validation_seeds=[0]",
        "callbacks.checkpoint_every_n_steps=0",
        "prior=none",
        "logger=none",
    ]


def lora_layout(path: Path) -> tuple[dict, dict]:
    """{key: (shape, dtype)} and the safetensors metadata of a LoRA file, adapter config parsed.

    peft keeps target_modules as a set, so its order in the header follows the process' string hashing
    (PYTHONHASHSEED): compared as sets.
    """
    with safe_open(str(path), framework="pt") as f:
        layout = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
        meta = dict(f.metadata() or {})
    if "lora_adapter_metadata" in meta:
        adapter = json.loads(meta["lora_adapter_metadata"])
        meta["lora_adapter_metadata"] = {
            k: sorted(v) if k.endswith("target_modules") and isinstance(v, list) else v for k, v in adapter.items()
        }
    return layout, meta


def test_ddp_two_cpu_processes_write_the_same_lora_file(tmp_path, tiny_cache):
    cache = tiny_cache  # conftest: the tiny model, built once, so the two ranks only read it
    # two DDP ranks (gloo), through a driver script that Lightning re-runs as rank 1; started first, so that the
    # single-process run below trains meanwhile (the suite itself uses one core)
    ddp_out = tmp_path / "ddp"
    script = tmp_path / "ddp_driver.py"
    script.write_text(DRIVER.format(repo=str(REPO), conf=str(REPO / "conf")))
    log_file = tmp_path / "ddp.log"
    with open(log_file, "w") as log_out:
        ddp = subprocess.Popen(
            [sys.executable, str(script), json.dumps(overrides(ddp_out, cache, "ddp_cpu"))],
            cwd=tmp_path,
            stdout=log_out,
            stderr=subprocess.STDOUT,
        )
    # single process, in this process
    from sdft.run.train import run

    single_out = tmp_path / "single"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides(single_out, cache, "cpu"))
    try:
        assert run(cfg)["steps"] == 3
        ddp.wait(timeout=150)
    finally:
        ddp.kill()  # a no-op once it has exited
    log = log_file.read_text()
    assert ddp.returncode == 0, log[-4000:]
    assert "SDFT_RANK_DONE 0 3" in log and "SDFT_RANK_DONE 1 3" in log, log[-4000:]  # both ranks ran 3 steps

    single_layout, single_meta = lora_layout(single_out / LORA_FILE)
    ddp_layout, ddp_meta = lora_layout(ddp_out / LORA_FILE)
    assert ddp_layout and ddp_layout == single_layout  # same keys, shapes and dtypes
    assert ddp_meta == single_meta  # same adapter config (rank, alpha, targets) in the header
    grids = sorted(p.name for p in (ddp_out / "main" / "grids").glob("*.png"))
    assert grids == ["step_000003_final.png"]  # rank 0 only
