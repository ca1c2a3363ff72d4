"""`sdft hub push RUN_DIR --repo user/name [--private]`: upload a run's trained files, model card and grid to the Hub.

The token comes from the HF_TOKEN environment variable only; it is passed to huggingface_hub's HfApi and never
written anywhere. The folder uploaded is the last phase's lora/ (or embedding/, model/) as the run wrote it, with the
README.md model card and grid.png beside the weights (sdft/adapters/model_card.py); checkpoints are not uploaded.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from sdft.errors import ConfigError

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def register(subparsers) -> None:
    """Add `push` under `sdft hub`."""
    p = subparsers.add_parser(
        "push",
        help="upload a run's LoRA files, model card and grid to a Hugging Face Hub model repo",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("run_dir", type=Path, help="a run folder (output_dir), a phase folder, or its lora/ folder")
    p.add_argument("--repo", required=True, help="the Hub model repo, user/name (created if it does not exist)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.set_defaults(func=run_push)


def upload_folder_of(run_dir: Path) -> Path:
    """The folder to upload: the run's last phase's output folder (a phase or output folder given is taken as is)."""
    from sdft.adapters.model_card import CARD_NAME, output_folder

    run_dir = run_dir.expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"hub push: {run_dir} is not a folder; give a run folder (its output_dir).")
    if (run_dir / CARD_NAME).is_file() and any(run_dir.glob("*.safetensors")):
        return run_dir  # an output folder itself
    phase_dir = run_dir
    summary = run_dir / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        last = data["phases"][-1] if "phases" in data else data
        phase_dir = run_dir / last.get("phase", "main") if (run_dir / last.get("phase", "main")).is_dir() else run_dir
    folder = output_folder(phase_dir)
    if folder is None or not (folder / CARD_NAME).is_file():
        raise ConfigError(
            f"hub push: no finished phase with a model card in {run_dir} (expected <phase>/lora/{CARD_NAME}); "
            "give the folder of a run that has finished."
        )
    return folder


def hub_token() -> str:
    """HF_TOKEN, checked to be set (huggingface_hub reads it from the environment itself: sdft never passes a token
    on, tests/test_secrets.py)."""
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise ConfigError(
            "hub push: set HF_TOKEN to a Hugging Face write token (https://huggingface.co/settings/tokens); "
            "sdft reads it from the environment only and never stores it."
        )
    return token


def push(run_dir: Path, repo: str, private: bool = False) -> str:
    """Create `repo` (if needed) and upload the run's output folder; returns the repo's URL."""
    from huggingface_hub import HfApi

    if not REPO_ID.match(repo):
        raise ConfigError(f"hub push: --repo {repo!r} is not a repo id; write it as user/name.")
    folder = upload_folder_of(run_dir)
    hub_token()  # one clear line without it; HfApi then reads HF_TOKEN from the environment
    api = HfApi()
    url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(
        repo_id=repo,
        folder_path=str(folder),
        repo_type="model",
        ignore_patterns=[".*", "*/.*"],  # temporary files of an interrupted write
        commit_message=f"Upload {folder.name} trained with sdft",
    )
    return str(url)


def run_push(args) -> int:
    url = push(args.run_dir, args.repo, args.private)
    print(f"Uploaded to {url}")
    return 0
