"""What the Train and Runs tabs of `sdft ui` do, free of gradio: `python train.py` front end, never a second trainer.

- `TrainForm` -> Hydra overrides -> the exact command, the composed config, and the command line's own checks
  (`check_form`: composition, every phase's `check_config` and data scan: the same `SdftError` messages) before
  anything starts;
- `TrainQueue`: one `train.py` subprocess at a time, later ones queued; its output goes to `<run>/ui_train.log`;
- `watch(run_dir)`: whole-run progress (the plain progress lines, sdft/callbacks/progress.py), loss points from the
  CSV logger, grids, log tail; `runs(root)`: earlier runs with their state, summary, grids and LoRA folders.
Sample / save / stop go through sdft/callbacks/controls.py; resume re-runs the command with `resume=<run folder>`.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sdft.callbacks.controls import running
from sdft.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]  # the checkout holding train.py and conf/
CONF = ROOT / "conf"
LOG_NAME = "ui_train.log"
PROGRESS = re.compile(r"step (\d+)/(\d+) \((\d+)%\) \| phase (\S+) .*?\| ([\d.?]+) it/s \| ETA (\S+)")


def presets(group: str) -> list[str]:
    """The names of conf/<group>/*.yaml (model presets, experiments)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def model_preset_for(path: str) -> str:
    """The conf/model preset whose model.path is `path` (the Train tab starts on the base the page loaded), else the
    path itself (the form then sets model.path)."""
    from omegaconf import OmegaConf

    for name in presets("model"):
        if str(OmegaConf.load(CONF / "model" / f"{name}.yaml").get("path")) == str(path):
            return name
    return str(path)


def quote_value(value: str) -> str:
    """A Hydra override value: quoted when it holds anything but plain word characters."""
    if re.fullmatch(r"[\w./\-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class TrainForm:
    """The fields people change; empty / None leaves the preset's value."""

    name: str = "ui"
    model: str = "toy"  # a conf/model preset, or a local file / folder / hub id (model.path)
    experiment: str = ""  # a conf/experiment preset
    dataset: str = ""  # data.instance_dir
    instance_prompt: str = ""
    class_prompt: str = ""
    rank: int | None = None
    lr: float | None = None
    steps: int | None = None
    resolution: int | None = None
    prior: bool | None = None
    phases: list[str] = field(default_factory=list)  # per-phase overrides (sdft/ui/phases.py)
    extra: str = ""  # more overrides, one per line (as on the command line)

    def overrides(self) -> list[str]:
        out = [f"+experiment={self.experiment}"] if self.experiment else []
        if self.model in presets("model"):
            out.append(f"model={self.model}")
        elif self.model:
            out.append(f"model.path={quote_value(self.model)}")
        out.append(f"name={quote_value(self.name or 'ui')}")
        for key, value in (
            ("data.instance_dir", self.dataset),
            ("data.instance_prompt", self.instance_prompt),
            ("data.class_prompt", self.class_prompt),
        ):
            if value:
                out.append(f"{key}={quote_value(value)}")
        for key, value in (
            ("adapter.rank", self.rank),
            ("optim.lr", self.lr),
            ("trainer.max_steps", self.steps),
            ("data.resolution", self.resolution),
        ):
            if value not in (None, ""):
                out.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={int(value)}")
        if self.prior is not None:
            out.append(f"prior={'default' if self.prior else 'none'}")
        out += self.phases
        out += [line.strip() for line in self.extra.splitlines() if line.strip() and not line.startswith("#")]
        return out


def run_overrides(form_overrides: list[str], run_dir: Path) -> list[str]:
    """The form's overrides for one run folder (Hydra's log and the run's files in the same place)."""
    return [*form_overrides, f"output_dir={quote_value(str(run_dir))}", f"hydra.run.dir={quote_value(str(run_dir))}"]


def command_line(overrides: list[str]) -> str:
    return shlex.join(["python", "train.py", *overrides])


_hydra = threading.Lock()  # Hydra's compose API is one global


@dataclass
class Checked:
    """A form composed and checked as train.py does: the config's YAML, the typed config, its phases and their data."""

    yaml: str
    cfg: object
    phases: list
    datas: list


def compose_form(overrides: list[str]):
    """conf/ composed with the overrides as train.py composes it (typed); ConfigError with Hydra's / the schema's
    message (unknown key, wrong type, missing preset)."""
    from hydra import compose, initialize_config_dir

    from sdft.errors import SdftError
    from sdft.run.train import as_config

    from sdft.run.checks import check_overrides

    plain = [o for o in overrides if not o.startswith("hydra.")]
    check_overrides(plain)  # a key that is gone: named with its new key, before Hydra's own error
    try:
        with _hydra, initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return as_config(compose(config_name="config", overrides=plain))
    except SdftError:
        raise
    except Exception as err:  # its own message, first line
        raise ConfigError(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__) from None


def inspect_form(overrides: list[str]) -> Checked:
    """Compose conf/ with the overrides as train.py does and run the command line's checks (every phase's config
    and data); raises ConfigError with the command line's message."""
    from omegaconf import OmegaConf

    from sdft.errors import SdftError
    from sdft.run.train import checked_phases

    cfg = compose_form(overrides)
    try:
        phases, datas = checked_phases(cfg)  # train.py's own checks and scan, each phase's settings resolved once
    except SdftError:
        raise
    except Exception as err:  # OmegaConf: a phase override of the wrong type
        raise ConfigError(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__) from None
    return Checked(OmegaConf.to_yaml(cfg), cfg, phases, datas)


def check_form(overrides: list[str]) -> str:
    """The composed config's YAML once the command line's checks pass (inspect_form)."""
    return inspect_form(overrides).yaml


@dataclass
class Job:
    run_dir: Path
    overrides: list[str]
    state: str = "queued"  # queued / running / finished / stopped / failed
    returncode: int | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def command(self) -> str:
        return command_line(self.overrides)


class TrainQueue:
    """train.py subprocesses, one at a time; `poll()` (the page's timer) notes ends and starts the next."""

    def __init__(self, root: Path = ROOT):
        self.root = root
        self.jobs: list[Job] = []
        self._lock = threading.Lock()

    def submit(self, overrides: list[str], run_dir: Path) -> Job:
        job = Job(Path(run_dir), overrides)
        with self._lock:
            self.jobs.append(job)
        self.poll()
        return job

    def current(self) -> Job | None:
        return next((j for j in self.jobs if j.state == "running"), None)

    def queued(self) -> list[Job]:
        return [j for j in self.jobs if j.state == "queued"]

    def poll(self) -> None:
        with self._lock:
            for job in self.jobs:
                if job.state == "running" and job.proc.poll() is not None:
                    job.returncode = job.proc.returncode
                    job.state = {0: "finished", 143: "stopped", 130: "stopped"}.get(job.returncode, "failed")
            if self.current() is None and self.queued():
                self._start(self.queued()[0])

    def _start(self, job: Job) -> None:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        log = open(job.run_dir / LOG_NAME, "ab")  # appended: a resumed run continues the same log
        job.proc = subprocess.Popen(
            [sys.executable, "train.py", *job.overrides], cwd=self.root, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()  # the child holds its own descriptor
        job.state = "running"

    def stop_all(self) -> None:
        """End the running subprocess (SIGTERM: its graceful stop) and drop the queue; on closing the UI."""
        with self._lock:
            for job in self.jobs:
                if job.state == "queued":
                    job.state = "stopped"
                elif job.state == "running" and job.proc.poll() is None:
                    job.proc.terminate()


@dataclass
class Watch:
    """A run's state for the page."""

    progress: str
    fraction: float
    losses: list[tuple[int, float]]
    grids: list[Path]
    log_tail: str


def watch(run_dir: str | Path, tail: int = 30) -> Watch:
    run = Path(run_dir)
    text = ""
    log = run / LOG_NAME
    if log.is_file():
        text = log.read_bytes()[-200_000:].decode(errors="replace")
    lines = text.splitlines()
    progress, fraction = "waiting for training to start (checks, model load, class images)", 0.0
    for line in reversed(lines):
        match = PROGRESS.search(line)
        if match:
            step, total, _, phase, rate, eta = match.groups()
            fraction = int(step) / max(int(total), 1)
            progress = f"step {step}/{total} ({100 * fraction:.0f}%), phase {phase}, {rate} it/s, ETA {eta}"
            break
    if (run / "summary.json").is_file():
        progress, fraction = "finished", 1.0
    losses: list[tuple[int, float]] = []
    for metrics in sorted(run.glob("logs/*/metrics.csv")):
        with open(metrics, newline="") as f:
            losses += [(int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(f) if r.get("train/loss")]
    grids = sorted(run.glob("*/grids/*.png"), key=lambda p: p.stat().st_mtime)
    return Watch(progress, fraction, losses, grids, "\n".join(lines[-tail:]))


@dataclass
class RunInfo:
    run_dir: Path
    state: str  # finished / running / unfinished
    summary: dict | None
    grids: list[Path]
    loras: list[Path]  # <phase>/lora folders

    @property
    def label(self) -> str:
        return f"{self.run_dir.parent.name}/{self.run_dir.name} ({self.state})"


def run_info(run_dir: Path) -> RunInfo:
    summary = None
    if (run_dir / "summary.json").is_file():
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except ValueError:
            summary = None
    state = "finished" if summary else "running" if running(run_dir) else "unfinished"
    grids = sorted(run_dir.glob("*/grids/*.png"), key=lambda p: p.stat().st_mtime)
    loras = sorted(p.parent for p in run_dir.glob("*/lora/pytorch_lora_weights.safetensors"))
    return RunInfo(run_dir, state, summary, grids, loras)


def runs(root: str | Path, limit: int = 200) -> list[RunInfo]:
    """Run folders (a config.yaml beside phase folders) under `root` (outputs/<name>/<date_time>), newest first."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise ConfigError(f"runs folder {root}: no such folder.")
    found = {p.parent for p in base.glob("*/*/config.yaml")} | {p.parent for p in base.glob("*/config.yaml")}
    found = {d for d in found if any((d / sub / "config.yaml").is_file() for sub in _phases(d))}
    ordered = sorted(found, key=lambda d: (d / "config.yaml").stat().st_mtime, reverse=True)[:limit]
    return [run_info(d) for d in ordered]


def _phases(run_dir: Path) -> list[str]:
    return [p.name for p in run_dir.iterdir() if p.is_dir() and (p / "config.yaml").is_file()]


def new_run_dir(root: str | Path, name: str) -> Path:
    return Path(root) / (name or "ui") / time.strftime("%Y-%m-%d_%H-%M-%S")
