"""The Train and Runs tabs in headless chromium (issue 31 #1): a refused value, then a toy run started from the
Train tab, progress and grids appearing, sample now, stop, resume, the run finishing with the LoRA of an uninterrupted
run of the command the page showed; the Runs tab opens it in Generate. Screenshots of each tab at a desktop and a
laptop width go to docs/ when SDFT_UI_SCREENSHOTS=docs (python -m pytest tests/test_ui_train_browser.py)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from helpers.browser import CHROMIUM, CHROMIUM_ARGS, need_chromium
from test_ui_browser import _free_port, _set

from helpers.config import ROOT
from sdft.config import ModelConfig
from sdft.generation.generator import Generator
from sdft.ui.app import build_app, launch
from sdft.ui.session import UiSession
from sdft.ui.train import TrainQueue

RUN_MS = 1_500_000  # a toy step takes ~0.1 s alone, up to 25 s on a contended 2-core machine
EXTRA = [
    "callbacks.validation_at_start=false",
    "callbacks.validation_every_n_steps=0",
    "callbacks.checkpoint_every_n_steps=20",  # and the likeness meter (at 20 and at the end), one sample a prompt
    "callbacks.likeness.seeds=[0]",
    "callbacks.likeness.num_flex_prompts=1",
    "callbacks.likeness.max_share=0",  # measured every time, whatever the machine's speed: the same in both runs
    "callbacks.validation_steps=2",
    "callbacks.validation_seeds=[0]",
    "callbacks.fixed_noise_loss=false",
    "callbacks.progress.every_n_steps=1",
    "trainer.log_every_n_steps=1",
]
SIZES = {"desktop": (1920, 1080), "laptop": (1366, 768)}


@pytest.fixture
def served(tmp_path):
    need_chromium()
    session = UiSession(Generator(ModelConfig(path="toy"), device="cpu"), tmp_path / "images")
    queue = TrainQueue()
    runs_root = tmp_path / "runs"
    runs_root.mkdir()
    app = build_app(session, lora_dir=str(runs_root), train_queue=queue, runs_root=str(runs_root))
    _, url, _ = launch(app, session, port=_free_port(), block=False, also_serve=[str(runs_root)])
    try:
        yield url, queue, runs_root
    finally:
        queue.stop_all()
        app.close()


def _shots(page, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ["SDFT_UI_SCREENSHOTS"]) if os.environ.get("SDFT_UI_SCREENSHOTS") else tmp_path
    page.evaluate("document.querySelectorAll('.toast-wrap').forEach(e => e.remove())")  # earlier messages
    for label, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(300)
        page.evaluate("window.scrollTo(0, 0)")
        shot = folder / f"ui_{name}_{label}.png"
        page.screenshot(path=str(shot), full_page=True, animations="disabled", timeout=180_000)
    page.set_viewport_size({"width": 1366, "height": 900})


def _text(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def _wait_text(page, selector: str, text: str, timeout=RUN_MS) -> None:
    page.wait_for_function(
        f"(document.querySelector({selector!r}) || {{}}).innerText?.includes({text!r})", timeout=timeout
    )


TAB_NAMES = "() => Array.from(document.querySelectorAll('button[role=tab]')).map(b => b.innerText.trim())"
TOP_TABS = ["Generate", "Train", "Runs", "txt2img", "img2img"]  # each tab header once


def test_switching_tabs_shows_each_tab_once(served):
    """Selecting Runs, then "Watch in Train" (a programmatic switch) once showed the Runs header twice: a gr.Timer
    made directly under gr.Tabs (gradio 6.31 counts it as a tab child)."""
    from playwright.sync_api import sync_playwright

    url, _, _ = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto(url)
        page.get_by_role("tab", name="Runs").click()
        page.locator("#runs-watch").wait_for()
        assert page.evaluate(TAB_NAMES) == TOP_TABS
        page.locator("#runs-watch").click()
        page.wait_for_function("document.querySelector('button[role=tab].selected').innerText.trim() === 'Train'")
        page.wait_for_timeout(500)
        assert page.evaluate(TAB_NAMES) == TOP_TABS
        browser.close()


@pytest.mark.slow
def test_train_from_the_browser_sample_stop_resume(served, tmp_path):
    from playwright.sync_api import sync_playwright

    url, queue, runs_root = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.set_default_timeout(30_000)
        page.goto(url)
        page.get_by_role("tab", name="Train").click()
        page.get_by_label("Experiment preset").click()
        page.get_by_role("option", name="dual_phase", exact=True).click()  # a multi-phase preset: its phases table
        page.wait_for_function(
            "(document.querySelector('#train-phases') || {}).innerText?.includes('datasets/example')"
        )
        assert "half-body" in _text(page, "#train-phases")
        _shots(page, "train_phases", tmp_path)
        page.get_by_label("Experiment preset").click()
        page.get_by_role("option", name="quickstart", exact=True).click()
        page.locator("#train-phases").wait_for(state="hidden")  # one phase: no table
        page.get_by_label("off").check()
        page.locator("#train-extra textarea").fill("\n".join(EXTRA))
        _set(page, "Learning rate", -1)
        page.locator("#train-check").click()
        _wait_text(page, "#train-message", "optim.lr=-1.0: must be > 0", 30_000)  # the command line's message
        page.locator("#train-start").click()
        page.get_by_text("optim.lr=-1.0: must be > 0").last.wait_for()
        assert queue.jobs == []  # refused before anything started

        _set(page, "Learning rate", 0)  # 0 (empty): the preset's
        _set(page, "Steps", 40)  # long enough to sample and stop mid-run on an idle machine
        page.locator("#train-check").click()
        _wait_text(page, "#train-message", "Checked", 30_000)
        assert _text(page, "#train-doctor").startswith("Data doctor: no findings")  # the toy subject is clean
        _wait_text(page, "#train-plan", "plan: 40 steps, peak memory", 180_000)  # the trace, after Check answered
        page.get_by_text("Command and composed config").click()
        command = page.locator("#train-command textarea").input_value()
        assert command.startswith("python train.py +experiment=quickstart model=toy name=ui ")
        _shots(page, "train", tmp_path)

        page.locator("#train-start").click()
        page.wait_for_function("document.querySelector('#train-run-dir textarea').value.length > 0")
        run_dir = Path(page.locator("#train-run-dir textarea").input_value())
        # the same command, uninterrupted, beside it (the page's queue runs one at a time; this one is ours)
        reference = tmp_path / "reference"
        argv = shlex.split(command)[2:] + [f"output_dir={reference}", f"hydra.run.dir={reference}"]
        plain = subprocess.Popen(
            [sys.executable, "train.py", *argv], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_text(page, "#train-progress", "ETA")  # trained a step: ask for a grid, then stop (read in order)
        page.locator("#train-sample").click()
        _wait_text(page, "#train-control", "Asked the run to sample", 30_000)
        page.locator("#train-stop").click()
        _wait_text(page, "#train-control", "Asked the run to stop", 30_000)
        _wait_text(page, "#train-progress", "stopped")
        page.wait_for_function("document.querySelectorAll('#train-grids img').length === 1")  # the sample-now grid
        (grid,) = run_dir.glob("main/grids/step_*_now.png")
        sampled_at = int(grid.name.split("_")[1])
        # the stop is read at the sample's step or, when it arrived while that grid was sampling, the next one
        (checkpoint,) = (run_dir / "main" / "checkpoints").glob("step_*")
        assert int(checkpoint.name.split("_")[1]) in (sampled_at, sampled_at + 1)
        assert (checkpoint / "state.ckpt").is_file()
        assert not (run_dir / "summary.json").exists()
        page.locator("#train-resume").click()
        _wait_text(page, "#train-progress", "finished")
        page.wait_for_function("document.querySelectorAll('#train-grids img').length >= 2")
        _wait_text(page, "#train-recommended", "main: recommended checkpoint step", 30_000)  # the likeness meter's
        page.locator("#train-likeness img").wait_for()
        _shots(page, "train_watch", tmp_path)
        assert plain.wait(timeout=RUN_MS / 1000) == 0
        ours = safetensors.torch.load_file(str(run_dir / "main" / "lora" / "pytorch_lora_weights.safetensors"))
        theirs = safetensors.torch.load_file(str(reference / "main" / "lora" / "pytorch_lora_weights.safetensors"))
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

        page.get_by_role("tab", name="Runs").click()
        page.locator("#runs-list").click()
        page.get_by_label("Run", exact=True).click()
        page.get_by_role("option", name=f"ui/{run_dir.name} (finished)").click()
        _wait_text(page, "#runs-files", "LoRA", 30_000)
        assert "Likeness meter: main: recommended checkpoint step" in _text(page, "#runs-files")
        page.wait_for_function("document.querySelectorAll('#runs-grids img').length >= 2")
        _shots(page, "runs", tmp_path)
        page.locator("#runs-open").click()
        lora = f"{run_dir / 'main' / 'lora'}:1"
        page.wait_for_function(f"document.querySelector('#loras textarea').value === {lora!r}")
        page.locator("#prompt textarea").fill("a sks dog")
        _set(page, "number input for Sampling steps", 2)
        page.locator("#generate").click()
        page.wait_for_function(
            "document.querySelector('#infotext textarea').value.includes('<lora:main:1.0>')", timeout=60_000
        )
        _shots(page, "generate", tmp_path)
        assert page.evaluate(TAB_NAMES) == TOP_TABS  # after two programmatic switches too
        browser.close()
