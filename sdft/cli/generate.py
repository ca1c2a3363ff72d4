"""`sdft generate`: the command line over sdft/generation/ (txt2img / img2img with LoRAs, sweeps into grids)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from sdft.config import TINY_MODEL, WeightDtype
from sdft.generation.params import DEFAULT_SCHEDULER, SCHEDULERS
from sdft.generation.prompt_loras import DEFAULT_LORA_DIR

if TYPE_CHECKING:
    from sdft.generation.generator import Generator

DESCRIPTION = "Generate images with a base model and any number of LoRAs."


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The base-model options shared by `sdft generate` and `sdft ui`."""
    add = parser.add_argument
    add(
        "--model",
        "-m",
        default=TINY_MODEL,
        help="tiny, a hub id, a diffusers folder (also a merged/full DreamBooth output) or a single-file checkpoint",
    )
    add("--model-config", default=None, help="single files: diffusers folder or hub id of the same architecture")
    add("--vae", default=None, help="replace the VAE (hub id, folder or single file)")
    add("--allow-pickle", action="store_true", help="allow .ckpt/.pt model files (pickle: only files you trust)")
    add("--offline", action="store_true", help="never touch the network (also HF_HUB_OFFLINE=1)")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `sdft generate` (also used by `python -m sdft.cli.generate`)."""
    add = parser.add_argument
    add("--prompt", "-p", required=True)
    add("--negative-prompt", "-n", default="")
    add_model_arguments(parser)
    add(
        "--lora",
        action="append",
        default=[],
        metavar="PATH[:WEIGHT]",
        help="a LoRA .safetensors (ours or kohya/A1111) or a run's lora/ folder; repeat for several",
    )
    add(
        "--lora-dir",
        default=DEFAULT_LORA_DIR,
        help="where the prompt's A1111 tags <lora:name:weight> / <lora:name> are looked up (file stem or "
        "ss_output_name, searched in subfolders)",
    )
    add("--lora-weight-sweep", default=None, metavar="W1,W2,...", help="grid over the LAST --lora's weight")
    add(
        "--embedding",
        action="append",
        default=[],
        metavar="PATH",
        help="a textual-inversion embedding (A1111 <name>.safetensors, diffusers learned_embeds.safetensors or a "
        "run's embedding/ folder); its token is printed; repeat for several",
    )
    add(
        "--guidance",
        "--cfg",
        metavar="G[,G2,...]",
        help="CFG scale; a comma list sweeps (default: the model's, 7.5; the toy's 3)",
    )
    add("--steps", type=int, default=20)
    add("--scheduler", "--sampler", default=DEFAULT_SCHEDULER, choices=list(SCHEDULERS))
    add("--seed", type=int, default=-1, help="image i uses seed + i; -1: random")
    add("--batch-size", type=int, default=1)
    add("--batch-count", type=int, default=1)
    add("--width", type=int, default=None)
    add("--height", type=int, default=None)
    add("--init-image", default=None, help="img2img: the starting image")
    add("--strength", default="0.75", metavar="S[,S2,...]", help="img2img denoising strength; a comma list sweeps")
    add("--out", "-o", default="outputs/generate", help="output folder")
    add("--device", default=None, help="cuda / cpu (default: cuda when available)")
    add("--dtype", default=None, choices=[d.value for d in WeightDtype], help="default: fp16 on CUDA, fp32 on CPU")
    return parser


def register(subparsers) -> None:
    """sdft.cli hook: `sdft generate ...`."""
    parser = subparsers.add_parser(
        "generate", help="txt2img / img2img with LoRAs, sweeps into grids", description=DESCRIPTION
    )
    add_arguments(parser)
    parser.set_defaults(func=run_from_args)


def generator_from_args(args) -> Generator:
    """The Generator for the model options `sdft generate` and `sdft ui` share (--model, --vae, --dtype, ...)."""
    from sdft.config import ModelConfig
    from sdft.generation.generator import Generator
    from sdft.models.loading import DTYPES

    cfg = ModelConfig(
        path=args.model,
        config=args.model_config,
        vae=args.vae,
        allow_pickle=args.allow_pickle,
        local_files_only=args.offline,
    )
    return Generator(cfg, device=args.device, dtype=DTYPES[WeightDtype(args.dtype)] if args.dtype else None)


def run_from_args(args: argparse.Namespace, generator: Generator | None = None) -> int:
    """Run `sdft generate` from parsed arguments; returns the exit code. `generator` reuses a loaded base."""
    from PIL import Image

    from sdft.errors import ConfigError
    from sdft.generation.params import GenerationParams, LoraSpec, parse_floats
    from sdft.generation.run import run_generation

    guidance = parse_floats(args.guidance, "--guidance") if args.guidance is not None else None
    strength = parse_floats(args.strength, "--strength")
    sweep = parse_floats(args.lora_weight_sweep, "--lora-weight-sweep") if args.lora_weight_sweep else None
    init = None
    if args.init_image:
        try:
            init = Image.open(args.init_image).convert("RGB")
        except OSError as err:
            raise ConfigError(f"--init-image {args.init_image}: cannot read it as an image: {err}") from err
    from sdft.embeddings.files import load_embedding_file

    for path in args.embedding:  # a damaged embedding file fails now, before the model loads
        load_embedding_file(path)
    if generator is None:
        generator = generator_from_args(args)
    for path in args.embedding:
        print(f"embedding {path}: write {generator.load_embedding(path)} in the prompt", file=sys.stderr)
    guidance = guidance or [generator.default_guidance()]
    params = GenerationParams(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        steps=args.steps,
        guidance=guidance[0],
        scheduler=args.scheduler,
        seed=args.seed,
        width=args.width,
        height=args.height,
        batch_size=args.batch_size,
        batch_count=args.batch_count,
        init_image=init,
        strength=strength[0],
        loras=[LoraSpec.parse(s) for s in args.lora],
        lora_dir=args.lora_dir,
    )
    result = run_generation(generator, params, args.out, guidance=guidance, strength=strength, lora_weights=sweep)
    for path in result.files:
        print(path)
    if result.grid:
        print(result.grid)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="sdft generate", description=DESCRIPTION))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from sdft.errors import SdftError

    try:
        return run_from_args(args)
    except SdftError as err:
        print(f"sdft generate: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
