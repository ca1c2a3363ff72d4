"""`sdft ui`: the command line of the Gradio app (sdft/ui/app.py): load the base once, serve until interrupted."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdft.cli.generate import add_model_arguments, generator_from_args
from sdft.config import WeightDtype


def register(subparsers) -> None:
    """sdft.cli hook: `sdft ui ...`."""
    parser = subparsers.add_parser(
        "ui",
        help="a local web UI: txt2img / img2img with LoRAs",
        description="A Gradio app on localhost over one loaded base model.",
    )
    add = parser.add_argument
    add_model_arguments(parser)
    add("--lora", action="append", default=[], metavar="PATH[:WEIGHT]", help="LoRAs listed at start; repeatable")
    add("--lora-dir", default="outputs", help="the folder the LoRA scan starts in")
    add(
        "--embedding",
        action="append",
        default=[],
        metavar="PATH",
        help="a textual-inversion embedding loaded at start (A1111 or diffusers file); the status shows its token",
    )
    add("--host", default="127.0.0.1", help="address to serve on (0.0.0.0 exposes it to your network)")
    add("--listen", action="store_true", help="serve on 0.0.0.0 (your network), like --host 0.0.0.0")
    add("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    add("--runs-dir", default="outputs", help="where the Train tab's runs go and the Runs tab looks")
    add("--no-train", action="store_true", help="the Generate tab only (no Train / Runs tabs)")
    add("--port", type=int, default=7860)
    add("--out", "-o", default="outputs/ui", help="output folder for the images")
    add("--device", default=None, help="cuda / cpu (default: cuda when available)")
    add("--dtype", default=None, choices=[d.value for d in WeightDtype], help="default: fp16 on CUDA, fp32 on CPU")
    parser.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    """Load the base once, build the app and serve it until interrupted."""
    from sdft.ui.app import build_app, launch
    from sdft.ui.session import UiSession, parse_lora_lines
    from sdft.ui.train import TrainQueue

    parse_lora_lines("\n".join(args.lora))  # a malformed --lora fails before the model loads
    generator = generator_from_args(args)
    session = UiSession(generator, Path(args.out))
    for path in args.embedding:
        generator.load_embedding(path)
    if args.lora:
        session.check_loras("\n".join(args.lora))  # a bad --lora fails now, with the same message as in the page
    queue = None if args.no_train else TrainQueue()
    app = build_app(session, loras=args.lora, lora_dir=args.lora_dir, train_queue=queue, runs_root=args.runs_dir)
    host = "0.0.0.0" if args.listen else args.host
    _, url, share_url = launch(
        app, session, host=host, port=args.port, block=False, share=args.share, also_serve=[args.runs_dir]
    )
    print(
        f"sdft ui: {share_url or url} (model {generator.model_name}; images go to {session.out_dir}). Ctrl+C stops it.",
        flush=True,
    )
    try:
        app.block_thread()
    finally:
        if queue is not None:
            queue.stop_all()  # a training subprocess gets SIGTERM: its graceful stop, resumable
    return 0
