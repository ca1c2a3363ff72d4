"""The Train / Runs tabs' logic without a browser (sdft/ui/train.py): the form's overrides and command, the command
line's own refusals before launching, one subprocess at a time with a queue, what the watch panel reads."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest
import yaml
from helpers.config import ROOT

from sdft.errors import ConfigError, DataError, SdftError
from sdft.prep.doctor.findings import Severity
from sdft.ui.train import LOG_NAME, TrainForm, TrainQueue, check_form, command_line, inspect_form, run_overrides
from sdft.ui.phases import phase_overrides, preset_rows
from sdft.ui.run_files import Likeness, likeness, recommended, resume_overrides
from sdft.ui.train import compose_form, model_preset_for, runs, watch
from sdft.ui.train_checks import doctor_findings, doctor_gate, doctor_markdown, plan_headline


def test_the_form_gives_the_exact_command():
    form = TrainForm(
        name="me",
        model="toy",
        experiment="quickstart",
        instance_prompt="photo of sks dog's face",
        steps=50,
        lr=1e-4,
        prior=False,
        extra="trainer.accumulate_grad_batches=2\n",
    )
    overrides = form.overrides()
    assert overrides == [
        "+experiment=quickstart",
        "model=toy",
        "name=me",
        "data.instance_prompt='photo of sks dog\\'s face'",
        "optim.lr=0.0001",
        "trainer.max_steps=50",
        "prior=none",
        "trainer.accumulate_grad_batches=2",
    ]
    assert command_line(overrides).startswith("python train.py +experiment=quickstart model=toy name=me ")
    assert TrainForm(model="/models/rv51.safetensors").overrides()[0] == "model.path=/models/rv51.safetensors"
    composed = check_form(overrides)  # Hydra parses the quoting back to the text typed
    assert "instance_prompt: photo of sks dog's face" in composed and "max_steps: 50" in composed


@pytest.mark.parametrize(
    "form, message",
    [
        (TrainForm(steps=0), "trainer.max_steps=0: must be >= 1"),
        (TrainForm(lr=-1.0), "optim.lr"),
        (TrainForm(dataset="/no/such/folder"), "does not exist"),
        (TrainForm(extra="data.no_such_key=1"), "data.no_such_key"),
    ],
)
def test_invalid_values_are_refused_with_the_command_lines_message(form, message):
    with pytest.raises(SdftError, match=message):
        check_form(form.overrides())


def _fake_train_py(root, seconds: float, code: int) -> None:
    (root / "train.py").write_text(
        f"import sys, time\nprint('started', sys.argv[1:], flush=True)\ntime.sleep({seconds})\nsys.exit({code})\n"
    )


def test_one_run_at_a_time_later_ones_wait(tmp_path):
    _fake_train_py(tmp_path, 0.5, 143)
    queue = TrainQueue(root=tmp_path)
    first = queue.submit(run_overrides(["name=a"], tmp_path / "a"), tmp_path / "a")
    second = queue.submit(["name=b"], tmp_path / "b")
    assert (first.state, second.state) == ("running", "queued")
    for _ in range(200):
        queue.poll()
        if second.state not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert (first.state, first.returncode, second.state) == ("stopped", 143, "stopped")
    log = (tmp_path / "a" / LOG_NAME).read_text()
    assert "started ['name=a', 'output_dir=" in log and f"hydra.run.dir={tmp_path / 'a'}" in log


def test_watch_and_runs_read_the_run_folder(tmp_path):
    run = tmp_path / "quickstart" / "2026-12-06_10-00-00"
    (run / "main" / "grids").mkdir(parents=True)
    (run / "main" / "lora").mkdir()
    (run / "logs" / "main").mkdir(parents=True)
    (run / "config.yaml").write_text("name: quickstart\n")
    (run / "main" / "config.yaml").write_text("name: quickstart\n")
    (run / "main" / "grids" / "step_000002_now.png").write_bytes(b"png")
    (run / "main" / "lora" / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    (run / "logs" / "main" / "metrics.csv").write_text("epoch,step,train/loss\n0,0,1.5\n0,1,\n0,2,1.25\n")
    (run / LOG_NAME).write_text(
        "[x][sdft.callbacks.progress][INFO] - step 2/4 (50%) | phase main 2/4 | epoch 0 | 1.5 it/s | ETA 00:01 | "
        "train/loss=1.25\nnext line\n"
    )
    seen = watch(run)
    assert seen.progress == "step 2/4 (50%), phase main, 1.5 it/s, ETA 00:01" and seen.fraction == 0.5
    assert seen.losses == [(0, 1.5), (2, 1.25)] and [p.name for p in seen.grids] == ["step_000002_now.png"]
    assert seen.log_tail.endswith("next line")
    (found,) = runs(tmp_path)
    assert found.run_dir == run and found.state == "unfinished" and found.loras == [run / "main" / "lora"]
    (run / "summary.json").write_text(json.dumps({"name": "quickstart", "steps": 4}))
    assert runs(tmp_path)[0].state == "finished" and watch(run).progress == "finished"


def test_sdft_ui_serves_locally_unless_asked():
    from sdft.cli import build_parser

    args = build_parser().parse_args(["ui"])
    assert (args.host, args.listen, args.share, args.runs_dir, args.no_train) == (
        "127.0.0.1",
        False,
        False,
        "outputs",
        False,
    )
    args = build_parser().parse_args(["ui", "--listen", "--runs-dir", "r", "--no-train"])
    assert (args.listen, args.runs_dir, args.no_train) == (True, "r", True)


@pytest.fixture
def set_without_trigger(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(2):
        shutil.copy(ROOT / "datasets" / "toy_subject" / f"sks_dog_0{i}.png", root / f"{i}.png")
    (root / "0.txt").write_text("a sks dog, blue", encoding="utf-8")
    (root / "1.txt").write_text("a blue dog", encoding="utf-8")  # the trigger is missing
    return root


def test_doctor_findings_are_shown_and_severe_ones_block_train(set_without_trigger):
    form = TrainForm(
        experiment="quickstart",
        dataset=str(set_without_trigger),
        extra="data.use_captions=true\ndata.trigger=sks\ndata.ensure_trigger=false",
    )
    checked = inspect_form(form.overrides())
    found = doctor_findings(checked)
    assert found[0].finding.severity == Severity.severe and found[0].finding.check == "trigger"
    shown = doctor_markdown(found, several_phases=False)
    assert "- **SEVERE** trigger: photos: 1 caption(s) lack the trigger 'sks'" in shown and "(`1.png`)" in shown
    with pytest.raises(DataError, match=r"^data.doctor=fatal: 1 severe finding\(s\) .*set data.doctor=warn"):
        doctor_gate(checked, form.overrides())  # train.py's message with data.doctor=fatal
    warn = [*form.overrides(), "data.doctor=warn"]  # as the message says: train anyway (train.py logs them)
    doctor_gate(inspect_form(warn), warn)
    clean = inspect_form(TrainForm(experiment="quickstart").overrides())
    assert not [p for p in doctor_findings(clean) if p.finding.severity == Severity.severe]
    doctor_gate(clean, [])


def test_plan_headline_for_a_device_of_the_plans_table():
    checked = inspect_form(TrainForm(experiment="quickstart", steps=3).overrides())  # toy: a ~7 s trace
    line = plan_headline(checked, "t4")
    assert re.match(r"plan: 3 steps, peak memory \d+\.\d\d GiB, about .+ of model arithmetic on t4 ", line), line
    with pytest.raises(SdftError, match="Unknown device 'h900'"):
        plan_headline(checked, "h900")


def test_likeness_table_and_chart_are_read_while_watching_and_from_the_summary(tmp_path):
    from sdft.evaluation.likeness_table import write_table

    run = tmp_path / "run"
    rows = [
        {"step": s, "checkpoint": str(run / "main" / "checkpoints" / f"step_{s:06d}"), "likeness": v, "flexibility": v}
        for s, v in ((2, 0.4), (4, 0.8))
    ]
    assert likeness(run) == Likeness(None, [])  # before the first measurement
    write_table(run / "main" / "likeness", rows, 1, {"metric": "toy"})  # what the meter writes after measuring
    seen = likeness(run)
    assert seen.chart == run / "main" / "likeness" / "likeness.png" and seen.chart.is_file()
    assert seen.lines == [
        f"main: recommended checkpoint step 4 (toy likeness 0.800, of 2 measured): `{rows[1]['checkpoint']}`"
    ]
    summary = {"name": "r", "phases": [{"phase": "face", "likeness": None}]}
    summary["phases"].append({"phase": "body", "likeness": {"recommended_step": 4, "best_dir": "/r/body/best"}})
    assert recommended(summary) == ["body: recommended checkpoint step 4: `/r/body/best`"]
    assert recommended(None) == []


def test_resume_a_run_started_elsewhere_with_its_own_overrides(tmp_path):
    run = tmp_path / "quickstart" / "2026-12-06_10-00-00"
    (run / "main").mkdir(parents=True)
    (run / "config.yaml").write_text("name: quickstart\n")
    (run / "main" / "config.yaml").write_text("name: quickstart\n")
    with pytest.raises(ConfigError, match=r"no .hydra/overrides.yaml .*python train.py ... resume="):
        resume_overrides(run)
    (run / ".hydra").mkdir()  # what Hydra saved for `python train.py +experiment=quickstart ... resume=auto`
    typed = ["+experiment=quickstart", "data.instance_prompt='a sks dog\\'s face'", "trainer.max_steps=4"]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*typed, "resume=auto"]))  # as Hydra saves them
    assert resume_overrides(run) == [
        *typed,
        f"resume={run}",
        f"output_dir={run}",
        f"hydra.run.dir={run}",
    ]
    _fake_train_py(tmp_path, 0.0, 0)
    job = TrainQueue(root=tmp_path).submit(resume_overrides(run), run)
    assert job.proc.wait(timeout=30) == 0 and f"'resume={run}'" in (run / LOG_NAME).read_text()
    (run / "summary.json").write_text("{}")
    with pytest.raises(ConfigError, match="that run has finished"):
        resume_overrides(run)


def test_phases_table_becomes_the_per_phase_overrides_train_py_takes():
    base = TrainForm(model="tiny", experiment="dual_phase", prior=False, extra="trainer=cpu")
    preset = preset_rows(compose_form(base.overrides()))
    assert preset == [
        [
            "face",
            150,
            0.001,
            "datasets/example_subject/face",
            "photo of sks character, face close-up",
            "photo of a character",
        ],
        [
            "body",
            150,
            0.001,
            "datasets/example_subject/body",
            "photo of sks character, half-body",
            "photo of a character",
        ],
    ]
    rows = [list(r) for r in preset]
    rows[0][1], rows[1][0], rows[1][2], rows[0][5] = 7, "torso", 2e-3, "a character, face"  # as the table sends them
    edits = phase_overrides(rows, preset)
    assert edits == [
        "++phases.0.overrides.trainer.max_steps=7",
        "++phases.0.overrides.data.class_prompt='a character, face'",
        "phases.1.name=torso",
        "++phases.1.overrides.optim.lr=0.002",
    ]
    form = TrainForm(**{**vars(base), "phases": edits})
    assert command_line(form.overrides()).endswith(
        "prior=none ++phases.0.overrides.trainer.max_steps=7 "
        "'++phases.0.overrides.data.class_prompt='\"'\"'a character, face'\"'\"'' "
        "phases.1.name=torso ++phases.1.overrides.optim.lr=0.002 trainer=cpu"
    )
    phases = inspect_form(form.overrides()).phases
    assert [(p.phase.name, p.trainer.max_steps, p.optim.lr, p.data.class_prompt) for p in phases] == [
        ("face", 7, 0.001, "a character, face"),
        ("torso", 150, 0.002, "photo of a character"),
    ]
    assert phase_overrides(preset, preset) == []  # nothing changed: the preset's phases as they are

    rows[0][1] = 0
    with pytest.raises(SdftError, match=r"trainer.max_steps=0 \(phase 'face'\): must be >= 1"):
        inspect_form(TrainForm(**{**vars(base), "phases": phase_overrides(rows, preset)}).overrides())
    with pytest.raises(ConfigError, match="has 1 row"):
        phase_overrides(rows[:1], preset)
    rows[0][1] = None
    with pytest.raises(ConfigError, match="row 1, steps: empty"):
        phase_overrides(rows, preset)


def test_the_page_starts_on_the_toy_bases_own_run(tmp_path, tiny_cache):
    """The Train tab starts on the base the page loaded; on the toy with the quickstart preset: its data at the
    base's 32 px. Without a preset
    the default data (the example subject, 64 px) would train the 32 px toy subject enlarged x2, which the doctor
    calls severe (8 findings on the toy subject); with it, none is."""
    import gradio as gr

    from sdft.config import ModelConfig
    from sdft.generation.generator import Generator
    from sdft.ui.app import build_app
    from sdft.ui.session import UiSession

    def start(model: ModelConfig) -> tuple[str, str]:
        """(base model, experiment) the Train tab starts on, for a page over `model`."""
        app = build_app(
            UiSession(Generator(model, device="cpu"), tmp_path),
            train_queue=TrainQueue(root=tmp_path),
            runs_root=str(tmp_path),
        )
        values = {b.label: b.value for b in app.blocks.values() if isinstance(b, gr.Dropdown)}
        return values["Base model (preset or path)"], values["Experiment preset"]

    assert start(ModelConfig(path="toy")) == ("toy", "quickstart")
    assert start(ModelConfig(path="tiny", cache_dir=str(tiny_cache))) == ("tiny", "")  # the base the page loaded
    assert model_preset_for("stable-diffusion-v1-5/stable-diffusion-v1-5") == "sd15"
    assert model_preset_for("/models/rv51.safetensors") == "/models/rv51.safetensors"  # no preset: model.path
    toy = str(ROOT / "datasets" / "toy_subject")

    def severe(experiment: str) -> list:
        found = doctor_findings(inspect_form(TrainForm(experiment=experiment, dataset=toy).overrides()))
        return [f.finding.check for f in found if f.finding.severity == Severity.severe]

    assert severe("quickstart") == []
    assert severe("") and set(severe("")) == {"resolution"}
