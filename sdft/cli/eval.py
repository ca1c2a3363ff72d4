"""`sdft eval`: the command line of sdft/evaluation/ (score a run folder, or a model and LoRA files)."""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf


def register(subparsers) -> None:
    """sdft.cli hook: `sdft eval RUN [options]` or `sdft eval --model M [--lora F ...] --instance-dir D ...`."""
    parser = subparsers.add_parser(
        "eval",
        help="score a run: DINO, CLIP-I, CLIP-T, PRES, DIV, fidelity, drift, cost",
        description="Generate the prompt set with a trained run (or a model and LoRA "
        "files) and score it (docs/eval.md).",
    )
    add = parser.add_argument
    add(
        "run",
        nargs="?",
        default=None,
        help="a finished run's output folder (holds config.yaml and summary.json); or `checkpoints RUN`: the likeness "
        "meter over the run's saved checkpoints, and the recommended one; or `compare SWEEP`: the LoRA / DreamBooth "
        "comparison report of a +experiment=compare sweep (docs/eval.md)",
    )
    add("run_dir", nargs="?", default=None, help=argparse.SUPPRESS)  # the RUN / SWEEP of `checkpoints` / `compare`
    add("--metric", default=None, choices=["auto", "face", "image", "toy"], help="checkpoints: the likeness metric")
    add("--phase", default=None, help="evaluate this phase (default: the last)")
    add("--all-phases", action="store_true", help="evaluate every phase")
    add(
        "--lora",
        action="append",
        default=[],
        metavar="FILE",
        help="LoRA file(s) or lora/ folders: with a run, scored on its base instead of the run's own outputs",
    )
    add("--model", default=None, help="without a run: the base model (tiny, hub id, diffusers folder, single file)")
    add("--instance-dir", default=None, help="without a run: the real subject images")
    add("--instance-prompt", default=None, help="without a run: e.g. 'photo of sks dog'")
    add("--class-prompt", default=None, help="without a run: e.g. 'photo of a dog'")
    add("--resolution", type=int, default=None, help="without a run: image size (default 512; 64 for tiny)")
    add("--with-base", action="store_true", help="also score the untouched base model and the real images")
    add("--out", default=None, help="output folder (default: <run>/eval, or outputs/eval)")
    add("--prompts", default=None, help="live | object | a text file (one prompt a line, {identifier} {cls})")
    add("--num-prompts", type=int, default=None)
    add("--seeds", default=None, help="comma list, e.g. 0,1,2,3")
    add("--steps", type=int, default=None)
    add("--clip-model", default=None, help="hub id or folder (default: eval.clip_model of the run)")
    add("--dino-model", default=None, help="hub id or folder (default: eval.dino_model of the run)")
    add("--identifier", default=None)
    add("--class-noun", default=None)
    add("--device", default=None)
    parser.set_defaults(func=run_from_args)


def model_run_config(args: argparse.Namespace):
    """The config a run would have had, for `--model` + `--instance-dir` without a run folder."""
    from sdft.config import SdftConfig
    from sdft.errors import ConfigError

    if not args.instance_dir:
        raise ConfigError(
            "sdft eval --model needs --instance-dir (the real subject images) and the prompts "
            "(--instance-prompt, --class-prompt); or give a run folder instead."
        )
    resolution = args.resolution  # None: the base model's native size (sdft/evaluation/evaluate.py)
    return OmegaConf.merge(
        OmegaConf.structured(SdftConfig),
        {
            "name": "eval",
            "model": {"path": args.model},
            "data": {
                "instance_dir": args.instance_dir,
                "instance_prompt": args.instance_prompt,
                "class_prompt": args.class_prompt,
                "resolution": resolution,
            },
        },
    )


def checkpoints_from_args(args: argparse.Namespace) -> int:
    """`sdft eval checkpoints RUN`: table, chart and recommended checkpoint of each phase."""
    from sdft.errors import ConfigError
    from sdft.run.likeness_posthoc import evaluate_checkpoints

    if args.run_dir is None:
        raise ConfigError("sdft eval checkpoints needs the run folder: sdft eval checkpoints outputs/<name>/<run>.")
    for r in evaluate_checkpoints(args.run_dir, args.phase, args.model, args.metric, args.device):
        print(f"{r['phase']}: recommended checkpoint step {r['recommended_step']} -> {r['best_dir']} ({r['table']})")
    return 0


def compare_from_args(args: argparse.Namespace) -> int:
    """`sdft eval compare SWEEP [--out DIR]`: the +experiment=compare report, again (its Hydra callback writes it when
    the sweep ends)."""
    from sdft.errors import ConfigError
    from sdft.evaluation.compare import write_compare_report

    if args.run_dir is None:
        raise ConfigError("sdft eval compare needs the sweep folder: sdft eval compare multirun/<date>/<time>.")
    for path in write_compare_report(args.run_dir, args.out):
        print(path)
    return 0


def run_from_args(args: argparse.Namespace) -> int:
    from sdft.errors import ConfigError
    from sdft.evaluation.evaluate import evaluate_targets
    from sdft.evaluation.report import write_report
    from sdft.evaluation.targets import Target, read_run, run_targets
    from sdft.generation.infotext import lora_display_name
    from sdft.generation.params import resolve_lora_file

    if args.run == "checkpoints" and not Path("checkpoints", "summary.json").is_file():
        return checkpoints_from_args(args)
    if args.run == "compare" and not Path("compare", "summary.json").is_file():
        return compare_from_args(args)
    if args.run_dir is not None:
        raise ConfigError(
            f"unexpected argument {args.run_dir!r} (only `sdft eval checkpoints RUN` and `sdft eval compare SWEEP` "
            "take two)."
        )
    if args.run is None and args.model is None:
        raise ConfigError("give a run folder (sdft eval outputs/<name>/<run>) or --model with --instance-dir.")
    if args.run is not None and args.model is not None:
        raise ConfigError("give either a run folder or --model, not both (a run already names its base model).")
    cfg = read_run(args.run)[0] if args.run else model_run_config(args)
    loras = [str(resolve_lora_file(f)) for f in args.lora]  # missing files and pickles fail here, before any work
    if loras or args.model:
        label = "+".join(lora_display_name(Path(f)) for f in loras) or "base"
        targets = [Target(label, cfg.model.path, loras, cfg.model.path, "lora" if loras else "base")]
    else:
        targets = run_targets(args.run, args.phase, args.all_phases)
    overrides = {
        k: v
        for k, v in {
            "prompts": args.prompts,
            "num_prompts": args.num_prompts,
            "steps": args.steps,
            "clip_model": args.clip_model,
            "dino_model": args.dino_model,
            "identifier": args.identifier,
            "class_noun": args.class_noun,
            "device": args.device,
            "seeds": [int(s) for s in args.seeds.split(",")] if args.seeds else None,
        }.items()
        if v is not None
    }
    out = Path(args.out) if args.out else (Path(args.run) / "eval" if args.run else Path("outputs") / "eval")
    with_base = args.with_base and targets[0].kind != "base"
    rows, results, evaluator = evaluate_targets(targets, cfg, out, with_base, overrides)
    for path in write_report(rows, results, evaluator, out):
        print(path)
    return 0
