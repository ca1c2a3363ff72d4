"""sdft.atomic: a write lands whole or not at all, with the umask's permissions, and every temp file it (or the
library writing into it) makes carries sdft's temp naming, which resuming removes when a kill -9 left it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from sdft.atomic import atomic_path, write_text


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_finished_write_replaces_the_target_and_leaves_no_temp_file(tmp_path):
    from sdft.atomic import TEMP_PREFIX

    target = tmp_path / "sub" / "summary.json"
    write_text(target, "old")
    with atomic_path(target) as tmp:
        assert tmp.name == "summary.json" and tmp.parent.parent == target.parent
        assert tmp.parent.name.startswith(TEMP_PREFIX) and tmp.parent.name.endswith("-summary.json")
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible before the block ends
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["summary.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path):
    target = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError("disk full")
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["a.txt"]


def test_shared_temp_name_is_renamed_only_by_its_owner(tmp_path):
    from sdft.atomic import temp_name

    target = tmp_path / "state.ckpt"
    with atomic_path(target, shared=True) as tmp:
        with atomic_path(target, shared=True, owner=False) as other:  # rank 1 gets the same name, touches nothing
            assert other == tmp and tmp.parent.name == temp_name("state.ckpt", shared=True)
        assert tmp.parent.is_dir()
        tmp.write_text("written by rank 0")
    assert target.read_text() == "written by rank 0" and listing(tmp_path) == ["state.ckpt"]


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_written_files_get_the_umask_permissions(mask, tmp_path, tiny_pipe_factory):
    """safetensors creates 0600 files (another user's A1111/ComfyUI could not read them): every writer gets what the
    umask gives, as `open` would (0644 with the usual 022)."""
    from sdft.adapters.formats import save_lora, save_pipeline
    from sdft.adapters.kohya import save_kohya_lora
    from sdft.adapters.lora import setup_trainable
    from sdft.config import AdapterConfig
    from sdft.embeddings.files import save_embedding_files

    old = os.umask(mask)
    try:
        pipe = tiny_pipe_factory()
        setup_trainable(pipe.unet, pipe.text_encoder, AdapterConfig(rank=2))
        files = [
            write_text(tmp_path / "a.txt", "x"),
            save_lora(pipe.unet, pipe.text_encoder, tmp_path / "lora" / "pytorch_lora_weights.safetensors"),
            save_kohya_lora(pipe.unet, pipe.text_encoder, tmp_path / "lora" / "run.safetensors", {}),
            *save_embedding_files("<sks>", torch.ones(1, 32), tmp_path / "emb").values(),
        ]
        with atomic_path(tmp_path / "plain.safetensors") as tmp:
            save_file({"a": torch.ones(2)}, str(tmp))
        files.append(tmp_path / "plain.safetensors")
        folder = save_pipeline(tiny_pipe_factory(), tmp_path / "model")
    finally:
        os.umask(old)
    for path in files:
        assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~mask), path
    weights = list(folder.rglob("*.safetensors"))
    assert weights and all(oct(p.stat().st_mode & 0o777) == oct(0o666 & ~mask) for p in weights)
    assert all(oct(p.stat().st_mode & 0o777) == oct(0o777 & ~mask) for p in [folder, *folder.iterdir()] if p.is_dir())
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys, threading, time, torch
    from safetensors.torch import save_file
    from sdft.atomic import atomic_path
    folder = sys.argv[1]
    with atomic_path(os.path.join(folder, "checkpoints", "big.safetensors")) as tmp:
        writer = threading.Thread(target=save_file, args=({"w": torch.zeros(40_000_000)}, str(tmp)), daemon=True)
        writer.start()
        while not [n for n in os.listdir(tmp.parent) if n.startswith(".tmp")]:  # safetensors' own temp file
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_kill_9_mid_write_leaves_only_sdft_temp_names_and_resume_removes_them(tmp_path):
    """A kill -9 while safetensors writes leaves its `.tmpXXXXXX` file: inside sdft's temp folder, so one naming
    finds it; `resume=<run>` removes such leftovers of dead processes (not a live writer's, nor real files)."""
    from sdft.atomic import TEMP_PREFIX, remove_stale_temps, temp_name
    from sdft.run.resume import find_run

    run = tmp_path / "run"
    state = run / "main" / "checkpoints" / "step_000002" / "state.ckpt"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"x")
    (run / "config.yaml").write_text("name: x\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(run / "main")], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    left = [p for p in (run / "main" / "checkpoints").iterdir() if p.name != "step_000002"]
    assert len(left) == 1 and left[0].name.startswith(TEMP_PREFIX), left
    assert [p.name[:4] for p in left[0].iterdir()] == [".tmp"]  # safetensors' temp file, inside ours
    shared = run / "main" / "checkpoints" / "step_000004" / temp_name("state.ckpt", shared=True)
    shared.mkdir(parents=True)
    (shared / "state.ckpt").write_bytes(b"half")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = run / "main" / f"{TEMP_PREFIX}{live.pid}-0a1b-x.safetensors"
        busy.mkdir()
        own = run / temp_name("summary.json")  # this process's pid: written before a crash, not by this run
        own.write_text("{")
        cfg = OmegaConf.create({"resume": str(run), "output_dir": None})
        assert find_run(cfg, tmp_path / "new") == run
        assert busy.is_dir() and state.is_file() and (run / "config.yaml").is_file()
        assert not left[0].exists() and not shared.exists() and not own.exists()
        assert [p.name for p in run.rglob(TEMP_PREFIX + "*")] == [busy.name]
    finally:
        live.kill()
        live.wait()
    assert remove_stale_temps(run) == [busy]
