"""`sdft export`: the command line of sdft/adapters/export.py (merge LoRAs into a base; diffusers folder and/or single file)."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "`sdft export`: merge LoRAs into a base model and write a diffusers folder and/or one single-file checkpoint."
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="merge LoRAs into a base model; write a diffusers folder and/or a single .safetensors checkpoint",
        description=DESCRIPTION,
    )
    p.add_argument(
        "--base",
        required=True,
        help="tiny, hub id, diffusers folder, single .safetensors file, or a full-DreamBooth run folder",
    )
    p.add_argument(
        "--config",
        default=None,
        help="for a single-file --base: diffusers folder or hub id of its architecture (default SD 1.5 / SDXL base 1.0)",
    )
    p.add_argument("--vae", default=None, help="replace the VAE: hub id, diffusers folder or single file")
    p.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="PATH[:WEIGHT]",
        help="LoRA file or LoRA run folder, optional weight (default 1); repeat for several",
    )
    p.add_argument("--diffusers", type=Path, default=None, metavar="DIR", help="write a diffusers folder")
    p.add_argument(
        "--single-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="write one original-layout checkpoint (A1111 / ComfyUI / civitai), .safetensors",
    )
    p.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16", help="dtype of the written weights")
    p.add_argument("--ckpt", action="store_true", help="allow a pickle .ckpt --single-file (not recommended)")
    p.add_argument("--allow-pickle", action="store_true", help="allow a .ckpt --base (pickle can run code)")
    p.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    from sdft.adapters.export import export, parse_lora

    loras = [parse_lora(spec) for spec in args.lora]
    written = export(
        args.base,
        loras,
        config=args.config,
        vae=args.vae,
        diffusers_dir=args.diffusers,
        single_file=args.single_file,
        dtype=args.dtype,
        allow_ckpt=args.ckpt,
        allow_pickle=args.allow_pickle,
    )
    for path in written:
        print(f"wrote {path}")
    return 0
