"""Tokens come from the environment / HF login only and never end up in anything a run writes."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sdft.redact import SECRET_NAME  # secret-looking names, as LoRA metadata redacts them
from sdft.config import SdftConfig
from sdft.run.train import run

ROOT = Path(__file__).resolve().parents[1]
HF = "hf" + "_"  # joined at run time so secret scanners do not mistake these fakes for real tokens
FAKE = {  # fake tokens in the formats the services use
    "HF_TOKEN": HF + "FAKEtokenFORtestsONLY0123456789abcd",
    "HUGGING_FACE_HUB_TOKEN": HF + "FAKEhubTOKENforTESTSonly987654321",
    "WANDB_API_KEY": "FAKEwandbKEY0123456789abcdef0123456789abcd",
}


def files_containing_secrets(root: Path) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.relative_to(root)}: {name}" for name, value in FAKE.items() if value.encode() in data]
    return hits


@pytest.fixture
def fake_tokens(monkeypatch):
    for name, value in FAKE.items():
        monkeypatch.setenv(name, value)


def test_csv_run_writes_no_token(fake_tokens, fast_config, tmp_path):
    summary = run(fast_config("logger=csv"))
    out = tmp_path / "out"
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"config.yaml", "summary.json"} <= written and any(n.endswith("metrics.csv") for n in written), written
    assert summary["output"] and Path(summary["output"]).is_file()  # the LoRA file (and its metadata) is checked too
    assert files_containing_secrets(out) == []


HYDRA_APP = textwrap.dedent(
    """
    import sys
    import hydra
    import sdft.config  # noqa: F401  (registers the schema)
    from sdft.run.train import run

    @hydra.main(config_path=sys.argv.pop(1), config_name="config", version_base="1.3")
    def main(cfg):
        run(cfg)

    main()
    """
)


def test_hydra_and_wandb_offline_run_writes_no_token(tiny_cache, tmp_path):
    """Through Hydra's own entry point (its .hydra/ files) with the W&B logger offline (its run files)."""
    from helpers.config import FAST  # noqa: PLC0415  (tests/ is on sys.path under pytest)

    run_dir = tmp_path / "hydra_run"
    env = {
        **os.environ,
        **FAKE,
        "SDFT_CACHE_DIR": str(tiny_cache),
        "WANDB_SILENT": "true",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    overrides = [
        *FAST,
        f"model.cache_dir={tiny_cache}",
        f"data.class_dir={tmp_path / 'class'}",
        "logger=wandb",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", HYDRA_APP, str(ROOT / "conf"), *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    assert {
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        ".hydra/hydra.yaml",
        "config.yaml",
        "summary.json",
    } <= written, written
    assert any(name.startswith("wandb/offline-run-") for name in written), written
    assert files_containing_secrets(run_dir) == []
    for value in FAKE.values():
        assert value not in proc.stdout + proc.stderr


def test_no_token_fields_in_the_config_schema():
    """Nothing in the config asks for a secret: tokens can only come from the environment or `hf auth login`."""

    def fields(cls, prefix=""):
        for f in dataclasses.fields(cls):
            yield prefix + f.name
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(default):
                yield from fields(type(default), prefix + f.name + ".")

    assert [name for name in fields(SdftConfig) if SECRET_NAME.search(name.rpartition(".")[2])] == []
    assert all(SECRET_NAME.search(name) for name in FAKE) and not SECRET_NAME.search("keep_tokens")


def test_sources_never_trust_remote_code():
    pattern = re.compile(r"trust_remote_code\s*=\s*(True|1\b)|\"trust_remote_code\"\s*:\s*True")
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "sdft").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []
    # never pass a token explicitly as a keyword argument: the libraries read env/login. `load_textual_inversion`'s
    # `token=` is the embedding's placeholder word (diffusers takes the hub token there as `hf_token`), not a secret.
    token_args = re.compile(r"(?<![.\w])token\s*=\s*(?!None\b|=)")
    explicit = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "sdft").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if token_args.search(line) and "load_textual_inversion" not in line and not line.lstrip().startswith("token = ")
    ]
    assert explicit == []
