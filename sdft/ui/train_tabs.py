"""The Train and Runs tabs of `sdft ui` (layout and wiring; the logic is sdft/ui/train.py).

Train: the fields people change -> the exact `python train.py ...` command and the composed config, checked with the
command line's own checks; Train queues it (one run at a time); the watch panel (refreshed every 2 s) shows the
whole-run progress, the loss chart, the grids as they are written and the log tail, with sample now / save now /
stop (sdft/callbacks/controls.py) and resume. Runs: earlier runs with their state, summary, grids and files;
"Open in Generate" puts a run's LoRAs into the Generate tab's LoRA box.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from sdft.callbacks.controls import request
from sdft.errors import SdftError
from sdft.ui.train import TrainForm, TrainQueue, command_line, inspect_form, presets, run_overrides, runs, watch
from sdft.ui.train import model_preset_for, new_run_dir
from sdft.ui.phases import COLUMNS, phase_overrides, preset_rows
from sdft.ui.run_files import likeness, recommended, resume_overrides
from sdft.ui.train_checks import DEVICES, doctor_findings, doctor_gate, doctor_markdown, plan_headline

THUMBNAILS = 12
DEFAULT_EXPERIMENT = "quickstart"  # on the toy base the page starts on its preset: its subject at 32 px
PRIOR = {"preset's": None, "on": True, "off": False}


def _number(value):
    """An empty gr.Number reads 0, which no rank / lr / steps / resolution can be: both mean the preset's value."""
    return None if value in (None, "", 0) else value


def _image(path: Path | None):
    """A run's PNG as an image value (not a file path the server must be allowed to read); None when absent."""
    if path is None:
        return None
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.copy()
    except OSError:  # being replaced: the next refresh reads it
        return None


def _loss_chart(points, path: Path):
    """The loss curve as a PNG (PIL, as the toy's card figures: the project does not depend on pandas/matplotlib)."""
    if len(points) < 2:
        return None
    from sdft.toy.export import plot_curves

    from PIL import Image

    plot_curves([("train/loss", points)], path)
    with Image.open(path) as image:
        return image.copy()  # shown as an image, not a file the server must be allowed to read


def train_tabs(gr, queue: TrainQueue, runs_root: str, lora_text, tabs, for_people, base: str = "toy") -> None:
    """Add the Train and Runs tabs inside the open gr.Tabs `tabs`; `lora_text` is the Generate tab's LoRA box; the
    form starts on `base`, the model path the page loaded (the toy: with its quickstart preset)."""
    chart_dir = Path(tempfile.mkdtemp(prefix="sdft-ui-"))

    def form(
        name, model, experiment, dataset, instance, klass, rank, lr, steps, resolution, prior, extra, table, preset
    ):
        """The page's fields as a TrainForm; ConfigError for a phases table that does not fit the preset."""
        return TrainForm(
            name=name or "ui",
            model=model or "toy",
            experiment=experiment or "",
            dataset=dataset or "",
            instance_prompt=instance or "",
            class_prompt=klass or "",
            rank=_number(rank),
            lr=_number(lr),
            steps=_number(steps),
            resolution=_number(resolution),
            prior=PRIOR.get(prior),
            phases=phase_overrides(table, preset) if preset else [],
            extra=extra or "",
        )

    def load_phases(model, experiment):
        """A multi-phase preset's phases as editable rows (hidden for single-phase presets)."""
        from sdft.ui.train import compose_form

        overrides = TrainForm(model=model or "toy", experiment=experiment or "").overrides()
        try:
            rows = preset_rows(compose_form(overrides))
        except SdftError:  # Check says why
            rows = []
        limits = (len(rows), len(rows)) if rows else None
        table = gr.Dataframe(value=rows or None, row_count=len(rows) or 1, row_limits=limits)
        return table, rows, gr.Accordion(visible=bool(rows))

    def doctor_text(checked, overrides) -> tuple[str, str | None]:
        """The doctor's findings, and the message that blocks Train (None: not blocked)."""
        shown = doctor_markdown(doctor_findings(checked), len(checked.phases) > 1)
        try:
            doctor_gate(checked, overrides)
        except SdftError as err:
            return shown, str(err)
        return shown, None

    def check(*fields):
        overrides = []
        try:
            overrides = form(*fields).overrides()
            checked = inspect_form(overrides)
        except SdftError as err:
            return command_line(overrides), "", f"**Refused:** {err}", "", ""
        doctor, blocked = doctor_text(checked, overrides)
        message = "Checked: the command line would accept these values."
        if blocked:
            message = f"**Train is blocked by the data doctor:** {blocked}"
        planning = "Planning... (a trace of one training step; Train does not wait for it)"
        return command_line(overrides), checked.yaml, message, doctor, planning

    def doctor_only(*fields):
        """On choosing a dataset folder: the doctor's cheap checks for the form as it stands."""
        if not fields[3]:
            return ""
        try:
            overrides = form(*fields).overrides()
            return doctor_text(inspect_form(overrides), overrides)[0]
        except SdftError as err:
            return f"**Data doctor:** not run: {err}"

    def plan(*fields):
        *fields, device_name = fields
        try:
            checked = inspect_form(form(*fields).overrides())
        except SdftError:  # refused: Check's message says why
            return ""
        try:
            return plan_headline(checked, device_name or "cpu")
        except Exception as err:  # noqa: BLE001  the forecast is advice, as in train.py: never blocks Train
            return f"No forecast: {type(err).__name__}: {err}"

    @for_people
    def launch(*fields):
        name = fields[0] or "ui"
        overrides = form(*fields).overrides()
        checked = inspect_form(overrides)  # refused here with the command line's message, before anything starts
        doctor_gate(checked, overrides)  # severe dataset findings: train.py's data.doctor=fatal message
        run_dir = new_run_dir(runs_root, name)
        job = queue.submit(run_overrides(overrides, run_dir), run_dir)
        return str(run_dir), f"`{job.command}`: {job.state}"

    def thumbnails(folder):
        from sdft.data.images import list_images

        try:
            images = list_images(Path(folder).expanduser()) if folder else []
        except Exception:  # a wrong folder is reported by Check / Train
            images = []
        return [str(p) for p in images[:THUMBNAILS]]

    def refresh(run_dir):
        queue.poll()
        jobs = [f"- {j.state}: `{j.run_dir}`" for j in queue.jobs[-8:]]
        queue_md = "\n".join(jobs) or "No run started from this page yet."
        if not run_dir:
            return queue_md, "", None, [], "", gr.Image(value=None, visible=False), ""
        seen = watch(run_dir)
        job = next((j for j in reversed(queue.jobs) if str(j.run_dir) == run_dir), None)
        progress = seen.progress if job is None or job.state in ("running", "finished") else f"{job.state}"
        if job is not None and job.state in ("stopped", "failed"):
            progress = f"{job.state} (exit {job.returncode}); last: {seen.progress}"
        chart = _loss_chart(seen.losses, chart_dir / f"loss-{abs(hash(run_dir))}.png")
        meter = likeness(run_dir)
        return (
            queue_md,
            progress,
            chart,
            [str(p) for p in seen.grids],
            seen.log_tail,
            gr.Image(value=_image(meter.chart), visible=meter.chart is not None),  # shown once the meter measured
            "\n".join(f"- {line}" for line in meter.lines),
        )

    def control(action):
        @for_people
        def ask(run_dir):
            if not run_dir:
                raise gr.Error("No run selected: start one, or pick one in the Runs tab.")
            request(run_dir, action)
            return f"Asked the run to {action}; it does so after its current step."

        return ask

    @for_people
    def resume(run_dir):
        """Any unfinished run folder, started here or not: train.py with the run's own saved overrides."""
        if not run_dir:
            raise gr.Error("No run selected: pick one in the Runs tab.")
        job = next((j for j in reversed(queue.jobs) if str(j.run_dir) == run_dir), None)
        if job is not None and job.state in ("running", "queued"):
            raise gr.Error(f"That run is {job.state}.")
        again = queue.submit(resume_overrides(run_dir), Path(run_dir))
        return f"Resuming `{run_dir}`: `{again.command}`: {again.state}"

    with gr.Tab("Train", id="train"):
        with gr.Row():
            name = gr.Textbox(value="ui", label="Run name", elem_id="train-name")
            start_model = model_preset_for(base)
            model = gr.Dropdown(
                presets("model"), value=start_model, allow_custom_value=True, label="Base model (preset or path)"
            )
            experiments = presets("experiment")
            experiment = gr.Dropdown(  # the toy base's own run (the README's quickstart), not its data at 64 px
                ["", *experiments],
                value=DEFAULT_EXPERIMENT if start_model == "toy" and DEFAULT_EXPERIMENT in experiments else "",
                label="Experiment preset",
            )
        with gr.Row():
            dataset = gr.Textbox(label="Dataset folder (empty: the preset's)", scale=2, elem_id="train-dataset")
            thumbs = gr.Gallery(label="Dataset", columns=6, height=120, scale=3, elem_id="train-thumbs")
        doctor_md = gr.Markdown(elem_id="train-doctor")
        with gr.Row():
            instance = gr.Textbox(label="Instance prompt (with the trigger word)", elem_id="train-instance")
            klass = gr.Textbox(label="Class prompt", elem_id="train-class")
        with gr.Row():
            rank = gr.Number(label="Rank (0: the preset's)", precision=0, elem_id="train-rank")
            lr = gr.Number(label="Learning rate", elem_id="train-lr")
            steps = gr.Number(label="Steps", precision=0, elem_id="train-steps")
            resolution = gr.Number(label="Resolution", precision=0, elem_id="train-resolution")
            prior = gr.Radio(list(PRIOR), value="preset's", label="Prior preservation")
        with gr.Accordion("Phases (this preset trains several in order)", open=True, visible=False) as phases_box:
            phases_table = gr.Dataframe(
                headers=COLUMNS,
                datatype=["str", "number", "number", "str", "str", "str"],
                type="array",
                interactive=True,
                label="Each phase's own values (they win over the fields above); edit the cells, not the rows",
                elem_id="train-phases",
            )
        preset_phases = gr.State([])
        extra = gr.Textbox(
            label="More overrides, one per line (as on the command line)", lines=2, elem_id="train-extra"
        )
        with gr.Row():
            check_btn = gr.Button("Check", elem_id="train-check")
            train_btn = gr.Button("Train", variant="primary", elem_id="train-start")
        message = gr.Markdown(elem_id="train-message")
        with gr.Row():
            plan_device = gr.Dropdown(DEVICES, value="cpu", label="Plan for device", scale=1, elem_id="train-device")
            with gr.Column(scale=3):  # the device list narrow, the headline wide
                plan_md = gr.Markdown(elem_id="train-plan")
        with gr.Accordion("Command and composed config", open=False):
            command = gr.Textbox(label="Command", interactive=False, elem_id="train-command")
            composed = gr.Code(label="Composed config", language="yaml", max_lines=30, elem_id="train-config")
        gr.Markdown("### Watch")
        with gr.Row():
            run_dir = gr.Textbox(label="Run folder", scale=3, elem_id="train-run-dir")
            queue_md = gr.Markdown(elem_id="train-queue")
        progress = gr.Markdown(elem_id="train-progress")
        with gr.Row():
            sample_btn = gr.Button("Sample now", elem_id="train-sample")
            save_btn = gr.Button("Save now", elem_id="train-save")
            stop_btn = gr.Button("Stop", variant="stop", elem_id="train-stop")
            resume_btn = gr.Button("Resume", elem_id="train-resume")
        control_msg = gr.Markdown(elem_id="train-control")
        with gr.Row():
            chart = gr.Image(label="Loss", type="pil", interactive=False, height=240, elem_id="train-loss")
            grids = gr.Gallery(
                label="Validation grids", columns=3, height=240, object_fit="contain", elem_id="train-grids"
            )
        with gr.Row():
            likeness_img = gr.Image(
                label="Likeness (per checkpoint)",
                type="pil",
                interactive=False,
                height=240,
                visible=False,
                elem_id="train-likeness",
            )
            likeness_md = gr.Markdown(elem_id="train-recommended")
        log_tail = gr.Textbox(label="Log (last lines)", lines=8, max_lines=8, interactive=False, elem_id="train-log")
        # inside the tab: a Timer made directly under gr.Tabs shows the next tab's header twice (gradio 6.31)
        timer = gr.Timer(2.0)

    fields = [name, model, experiment, dataset, instance, klass, rank, lr, steps, resolution, prior, extra]
    fields += [phases_table, preset_phases]
    gr.on(
        [experiment.change, model.change], load_phases, [model, experiment], [phases_table, preset_phases, phases_box]
    )
    check_btn.click(check, fields, [command, composed, message, doctor_md, plan_md]).then(
        plan, [*fields, plan_device], plan_md
    )
    train_btn.click(launch, fields, [run_dir, message])
    dataset.change(thumbnails, dataset, thumbs)
    gr.on([dataset.submit, dataset.blur], doctor_only, fields, doctor_md)  # not per keystroke: it scans the set
    watched = [queue_md, progress, chart, grids, log_tail, likeness_img, likeness_md]
    timer.tick(refresh, run_dir, watched)
    run_dir.change(refresh, run_dir, watched)
    sample_btn.click(control("sample"), run_dir, control_msg)
    save_btn.click(control("save"), run_dir, control_msg)
    stop_btn.click(control("stop"), run_dir, control_msg)
    resume_btn.click(resume, run_dir, control_msg)

    with gr.Tab("Runs", id="runs"):
        with gr.Row():
            root = gr.Textbox(value=runs_root, label="Runs under", scale=3)
            list_btn = gr.Button("List runs", scale=1, elem_id="runs-list")
        chosen = gr.Dropdown([], label="Run", elem_id="runs-choice")
        summary = gr.Code(label="summary.json", language="json", max_lines=20, elem_id="runs-summary")
        run_grids = gr.Gallery(label="Grids", columns=3, height=260, object_fit="contain", elem_id="runs-grids")
        files = gr.Markdown(elem_id="runs-files")
        with gr.Row():
            watch_btn = gr.Button("Watch in Train", elem_id="runs-watch")
            open_btn = gr.Button("Open in Generate", variant="primary", elem_id="runs-open")

    @for_people
    def list_runs(folder):
        found = runs(folder)
        if not found:
            gr.Warning(f"No run under {folder}.")
        return gr.Dropdown(choices=[(r.label, str(r.run_dir)) for r in found], value=None)

    def show(folder):
        if not folder:
            return "", [], ""
        from sdft.ui.train import run_info

        info = run_info(Path(folder))
        lines = [f"**{info.state}**: `{info.run_dir}`"]
        lines += [f"- LoRA: `{p}` ({', '.join(f.name for f in sorted(p.glob('*.safetensors')))})" for p in info.loras]
        lines += [f"- Likeness meter: {line}" for line in recommended(info.summary)]
        if info.state == "unfinished":
            lines.append("- Unfinished: *Watch in Train*, then *Resume* continues it with its own saved overrides.")
        text = json.dumps(info.summary, indent=2) if info.summary else ""
        return text, [str(p) for p in info.grids], "\n".join(lines)

    @for_people
    def open_in_generate(folder):
        from sdft.ui.train import run_info

        if not folder:
            raise gr.Error("Pick a run first.")
        info = run_info(Path(folder))
        if not info.loras:
            raise gr.Error(f"{folder} has no LoRA yet (lora/ is written when a phase finishes).")
        return "\n".join(f"{p}:1" for p in info.loras), gr.Tabs(selected="generate")

    list_btn.click(list_runs, root, chosen)
    chosen.change(show, chosen, [summary, run_grids, files])
    watch_btn.click(lambda folder: (folder, gr.Tabs(selected="train")), chosen, [run_dir, tabs])
    open_btn.click(open_in_generate, chosen, [lora_text, tabs])
