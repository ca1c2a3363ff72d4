"""`sdft run sample|save|stop RUN_DIR`: ask a running training run for a grid now, a checkpoint now, or the graceful
stop (sdft/callbacks/controls.py); waits for the run's answer unless --no-wait."""

from __future__ import annotations

import argparse
import time

HELP = {
    "sample": "a validation grid at the current step (grids/step_<N>_now.png)",
    "save": "a checkpoint at the current step (checkpoints/step_<N>/: LoRA files + resumable state)",
    "stop": "stop after the current step with a checkpoint; `python train.py ... resume=auto` continues",
}


def register(subparsers) -> None:
    """sdft.cli hook: `sdft run sample|save|stop RUN_DIR`."""
    for action, text in HELP.items():
        parser = subparsers.add_parser(action, help=text, description=f"Ask a running training run for {text}.")
        parser.add_argument("run_dir", metavar="RUN_DIR", help="the run's output folder (holds config.yaml)")
        parser.add_argument("--no-wait", action="store_true", help="return once asked, without waiting for the run")
        parser.add_argument(
            "--timeout", type=float, default=600, help="seconds to wait for the run's answer (default 600)"
        )
        parser.set_defaults(func=run_from_args, action=action)


def run_from_args(args: argparse.Namespace) -> int:
    from sdft.callbacks.controls import answer, request

    path = request(args.run_dir, args.action)
    if args.no_wait:
        print(f"asked {args.run_dir} to {args.action} ({path}); the run reads it at its next step")
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        done = answer(path)
        if done is not None:
            print(f"{done['action']} at step {done['step']}: {done['result']}")
            return 0
        time.sleep(0.2)
    print(f"no answer from {args.run_dir} within {args.timeout:g} s; the request stays ({path})")
    return 1
