"""`sdft lora resize|extract`: the LoRA file tools' command lines (their work: sdft/adapters/resize.py, extract.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

RESIZE_DESCRIPTION = (
    "`sdft lora resize IN OUT --rank R`: a LoRA at a lower rank by SVD, as kohya's resize_lora.py does."
)
EXTRACT_DESCRIPTION = "`sdft lora extract --base B --tuned T OUT --rank R`: a LoRA from the weight difference of a fine-tuned model\n(e.g. a full DreamBooth run) and its base, by SVD, as kohya's extract_lora_from_models.py does."


def register(subparsers) -> None:
    """Add `resize` and `extract` under `sdft lora`."""
    register_resize(subparsers)
    register_extract(subparsers)


def register_resize(subparsers) -> None:
    p = subparsers.add_parser(
        "resize",
        help="lower a LoRA's rank by SVD (kohya-style; alpha/rank scale kept)",
        description=RESIZE_DESCRIPTION,
    )
    p.add_argument("input", type=Path, help="LoRA file (kohya or diffusers format, .safetensors)")
    p.add_argument("output", type=Path, help="resized LoRA, kohya format (.safetensors)")
    p.add_argument("--rank", type=int, required=True, help="new rank (modules already at or below it are copied)")
    p.add_argument(
        "--fro-target",
        type=float,
        default=None,
        help="per-module dynamic rank: smallest rank <= --rank keeping this Frobenius-norm fraction",
    )
    dtype = p.add_mutually_exclusive_group()
    dtype.add_argument("--fp16", dest="fp16", action="store_true", default=None, help="write fp16 tensors")
    dtype.add_argument("--fp32", dest="fp16", action="store_false", help="write fp32 tensors (default: as input)")
    p.add_argument("--per-module", action="store_true", help="print the retained fraction of every module")
    p.set_defaults(func=run_resize)


def run_resize(args: argparse.Namespace) -> int:
    from sdft.adapters.resize import resize_file

    if args.output.suffix != ".safetensors":
        raise SystemExit("sdft lora resize: the output must be a .safetensors file")
    report = resize_file(args.input, args.output, args.rank, args.fro_target, args.fp16)
    if args.per_module:
        for m in report.modules:
            print(f"{m.retained:.4f}  rank {m.old_rank:>3} -> {m.new_rank:<3} {m.name}")
    print(f"{args.output}: {report.summary()}")
    return 0


def register_extract(subparsers) -> None:
    p = subparsers.add_parser(
        "extract",
        help="LoRA from the weight difference of a fine-tuned model and its base (SVD)",
        description=EXTRACT_DESCRIPTION,
    )
    p.add_argument("output", type=Path, help="LoRA file to write, kohya format (.safetensors)")
    p.add_argument("--base", required=True, help="base model: anything model.path accepts")
    p.add_argument(
        "--tuned",
        required=True,
        help="fine-tuned model (e.g. a full DreamBooth run folder or its model/), "
        "or an adapter file / run of any kind (LoHa, LoKr, DoRA, OFT...) to turn into a LoRA",
    )
    p.add_argument("--rank", type=int, required=True, help="LoRA rank")
    p.add_argument("--conv-rank", type=int, default=None, help="rank for 3x3 convs (default: --rank; 0 = skip them)")
    p.add_argument("--config", default=None, help="diffusers folder / hub id giving single files their architecture")
    p.add_argument(
        "--min-diff", type=float, default=None, help="relative change below which a layer is skipped (default 1e-6)"
    )
    p.add_argument("--fp16", action="store_true", help="write fp16 tensors (default fp32)")
    p.add_argument("--device", default="cpu", help="where the SVDs run (cuda is much faster for SD 1.5)")
    p.add_argument("--allow-pickle", action="store_true", help="allow .ckpt inputs (pickle can run code)")
    p.set_defaults(func=run_extract)


def run_extract(args: argparse.Namespace) -> int:
    from sdft.adapters.extract import MIN_DIFF, extract_file

    args.min_diff = MIN_DIFF if args.min_diff is None else args.min_diff
    if args.output.suffix != ".safetensors":
        raise SystemExit("sdft lora extract: the output must be a .safetensors file")
    report = extract_file(
        args.base,
        args.tuned,
        args.output,
        args.rank,
        args.conv_rank,
        args.config,
        args.min_diff,
        args.fp16,
        args.device,
        args.allow_pickle,
    )
    print(f"{args.output}: {report.summary()}")
    return 0
