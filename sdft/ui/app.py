"""`sdft ui`: a Gradio app on localhost for txt2img / img2img with LoRAs, over one loaded base model.

Layout: prompt and negative prompt on top; on the left the txt2img / img2img tabs (each with its Generate button),
the sampling settings and the LoRA panel (lines of `PATH[:WEIGHT]`, a folder scan into a dropdown, a check that loads
them now); on the right the gallery of the images just made, their A1111 parameters and where they were saved.
The logic lives in sdft/ui/session.py; this file is layout, error display and the command. Errors meant for people
(`SdftError`: a bad path, a LoRA that does not fit the base, bad sizes) appear as a message in the page.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Sequence

from sdft.errors import SdftError
from sdft.generation.params import DEFAULT_SCHEDULER, SCHEDULERS
from sdft.generation.lora_scan import find_loras
from sdft.ui.session import UiSession, format_lora_lines, parse_lora_lines


def _gradio():
    """Import gradio with its telemetry and update check off (nothing may call out of the machine)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    return gr


def for_people(fn):
    """Show `SdftError`s as a readable message in the page (gr.Error) instead of a generic failure."""
    gr = _gradio()

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SdftError as err:
            raise gr.Error(str(err), print_exception=False) from err

    return wrapper


def build_app(
    session: UiSession,
    *,
    loras: Sequence[str] = (),
    lora_dir: str = "outputs",
    train_queue=None,
    runs_root: str = "outputs",
):
    """The gr.Blocks of one session (not launched); with a `TrainQueue` (sdft/ui/train.py) also the Train and Runs
    tabs, whose runs go under `runs_root`."""
    gr = _gradio()
    gen = session.generator
    width, height = gen.default_size()
    smallest, largest, size_step = gen.size_range()  # from the model: the 32 px toy's size is below SD's 64
    schedulers = [(f"{a1111} ({name})", name) for name, (_, _, a1111) in SCHEDULERS.items()]

    def outputs_of(render):
        gallery = [(str(path), f"seed {seed}") for path, seed in zip(render.files, render.seeds)]
        names = ", ".join(path.name for path in render.files)
        saved = f"Saved {len(render.files)} image(s) to `{session.out_dir}`: {names}"
        return gallery, render.infotexts, render.infotexts[0] if render.infotexts else "", saved, session.lora_status()

    @for_people
    def txt2img(prompt, negative, scheduler, steps, guidance, w, h, seed, batch_size, batch_count, lora_text, folder):
        return outputs_of(
            session.generate(
                prompt=prompt,
                negative_prompt=negative,
                scheduler=scheduler,
                steps=steps,
                guidance=guidance,
                width=w,
                height=h,
                seed=seed,
                batch_size=batch_size,
                batch_count=batch_count,
                lora_text=lora_text,
                lora_dir=folder,
            )
        )

    @for_people
    def img2img(
        init,
        strength,
        prompt,
        negative,
        scheduler,
        steps,
        guidance,
        w,
        h,
        seed,
        batch_size,
        batch_count,
        lora_text,
        folder,
    ):
        if init is None:
            raise gr.Error("img2img needs an init image: drop one into the img2img tab.")
        return outputs_of(
            session.generate(
                prompt=prompt,
                negative_prompt=negative,
                scheduler=scheduler,
                steps=steps,
                guidance=guidance,
                width=w,
                height=h,
                seed=seed,
                batch_size=batch_size,
                batch_count=batch_count,
                lora_text=lora_text,
                lora_dir=folder,
                init_image=init,
                strength=strength,
            )
        )

    @for_people
    def scan(folder):
        found = find_loras(folder)
        if not found:
            gr.Warning(f"No LoRA (.safetensors) found under {folder}.")
        root = Path(folder).expanduser()
        choices = [(str(Path(path).relative_to(root)), path) for path in found]  # shown short, newest first
        return gr.Dropdown(choices=choices, value=found[0] if found else None)

    def show_selected(infotexts, evt: gr.SelectData):
        return infotexts[evt.index] if infotexts and 0 <= evt.index < len(infotexts) else ""

    show_selected.__annotations__["evt"] = gr.SelectData  # gradio finds event data by the real type, not a string

    with gr.Blocks(title=f"sdft — {gen.model_name}", analytics_enabled=False) as app:
        gr.Markdown(
            f"## sdft — `{gen.model_name}`\nImages are saved to `{session.out_dir}` with their A1111 "
            "parameters; LoRAs switch without reloading the base model."
        )
        with gr.Tabs(selected="generate") as tabs:
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    prompt = gr.Textbox(label="Prompt", lines=3, scale=3, elem_id="prompt")
                    negative = gr.Textbox(label="Negative prompt", lines=3, scale=2, elem_id="negative-prompt")
                with gr.Row():
                    with gr.Column(scale=1):
                        with gr.Tabs():
                            with gr.Tab("txt2img", id="txt2img"):
                                run_txt = gr.Button("Generate", variant="primary", elem_id="generate")
                            with gr.Tab("img2img", id="img2img"):
                                init = gr.Image(
                                    label="Init image",
                                    type="pil",
                                    sources=["upload", "clipboard"],
                                    elem_id="init-image",
                                    height=256,
                                )
                                strength = gr.Slider(0.01, 1.0, value=0.75, step=0.01, label="Denoising strength")
                                run_img = gr.Button("Generate img2img", variant="primary", elem_id="generate-img2img")
                        with gr.Accordion("Sampling", open=True):
                            scheduler = gr.Dropdown(schedulers, value=DEFAULT_SCHEDULER, label="Scheduler")
                            with gr.Row():
                                steps = gr.Slider(1, 150, value=20, step=1, label="Sampling steps")
                                guidance = gr.Slider(
                                    1.0, 30.0, value=gen.default_guidance(), step=0.5, label="CFG scale"
                                )
                            with gr.Row():
                                w = gr.Slider(smallest, largest, value=width, step=size_step, label="Width")
                                h = gr.Slider(smallest, largest, value=height, step=size_step, label="Height")
                            with gr.Row():
                                seed = gr.Number(value=-1, precision=0, label="Seed (-1: random)", elem_id="seed")
                                batch_size = gr.Slider(1, 16, value=1, step=1, label="Batch size")
                                batch_count = gr.Slider(1, 16, value=1, step=1, label="Batch count")
                        with gr.Accordion("LoRAs", open=True):
                            lora_text = gr.Textbox(
                                value=format_lora_lines(parse_lora_lines("\n".join(loras))),
                                lines=3,
                                label="LoRAs, one per line: PATH[:WEIGHT]",
                                elem_id="loras",
                                placeholder="outputs/run/face/lora:0.8\ndownloads/style.safetensors:0.5",
                            )
                            with gr.Row():
                                folder = gr.Textbox(
                                    value=lora_dir,
                                    label="Find LoRAs under (also where <lora:name:weight> in the prompt is looked up)",
                                    scale=3,
                                    elem_id="lora-dir",
                                )
                                scan_btn = gr.Button("Scan", scale=1)
                            with gr.Row():
                                found = gr.Dropdown([], label="Found LoRAs", allow_custom_value=True, scale=3)
                                weight = gr.Number(value=1.0, label="Weight", scale=1)
                                add_btn = gr.Button("Add", scale=1)
                            check_btn = gr.Button("Load / check LoRAs")
                            status = gr.Markdown(session.lora_status(), elem_id="lora-status")
                    with gr.Column(scale=1):
                        gallery = gr.Gallery(
                            label="Images",
                            columns=4,
                            type="filepath",
                            format="png",
                            interactive=False,
                            elem_id="gallery",
                            height=420,
                        )
                        infotext = gr.Textbox(
                            label="Generation parameters", lines=4, interactive=False, elem_id="infotext"
                        )
                        saved = gr.Markdown(elem_id="saved")
        infotexts = gr.State([])

        settings = [
            prompt,
            negative,
            scheduler,
            steps,
            guidance,
            w,
            h,
            seed,
            batch_size,
            batch_count,
            lora_text,
            folder,
        ]
        results = [gallery, infotexts, infotext, saved, status]
        run_txt.click(txt2img, settings, results)
        prompt.submit(txt2img, settings, results)
        run_img.click(img2img, [init, strength, *settings], results)
        gallery.select(show_selected, infotexts, infotext)
        scan_btn.click(scan, folder, found)
        add_btn.click(for_people(session.add_lora), [lora_text, found, weight], lora_text)
        check_btn.click(for_people(session.check_loras), lora_text, status)
        if train_queue is not None:  # the Train and Runs tabs: a front end to train.py (sdft/ui/train_tabs.py)
            from sdft.ui.train_tabs import train_tabs

            with tabs:
                train_tabs(gr, train_queue, runs_root, lora_text, tabs, for_people, str(gen.model_config.path))
    return app


def launch(
    app,
    session: UiSession,
    *,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    block: bool = True,
    share: bool = False,
    also_serve: Sequence[str] = (),
):
    """Serve `app` locally (a share link only when asked); block=False returns (app, url, share url) at once, the
    server running in a thread (`app.close()` stops it). `also_serve`: more folders whose files the page may show
    (the runs' grids)."""
    session.out_dir.mkdir(parents=True, exist_ok=True)
    return app.launch(
        server_name=host,
        server_port=port,
        share=share,
        inbrowser=False,
        show_error=True,
        prevent_thread_lock=not block,
        allowed_paths=[str(session.out_dir.resolve()), *(str(Path(p).expanduser().resolve()) for p in also_serve)],
        ssr_mode=False,
        mcp_server=False,
        quiet=True,
    )
