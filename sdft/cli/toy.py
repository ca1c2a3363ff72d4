"""`sdft toy world|vae|decoder|export|study|masks`: the toy world's tools (sdft/toy/, sdft/toy/MODEL_CARD.md): its dataset,
the toy base's pretraining steps, the quickstart's multi-seed study and generated masks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    world = subparsers.add_parser("world", help="write the toy-world captioned dataset")
    world.add_argument("--out", default="outputs/toy_world")
    world.add_argument("--count", type=int, default=5000)
    world.add_argument("--seed", type=int, default=0)
    world.set_defaults(func=run_world)

    vae = subparsers.add_parser("vae", help="pretraining step 1: train the toy VAE, write the start pipeline")
    vae.add_argument("--out", default="outputs/toy_init")
    vae.add_argument("--steps", type=int, default=900)
    vae.add_argument("--batch-size", type=int, default=32)
    vae.add_argument("--lr", type=float, default=1e-3)
    vae.add_argument("--init", default=None, help="continue from this VAE folder (e.g. outputs/toy_init/vae)")
    vae.add_argument("--seed", type=int, default=0)
    vae.add_argument("--threads", type=int, default=1)
    vae.set_defaults(func=run_vae)

    decoder = subparsers.add_parser(
        "decoder", help="pretraining step 5: sharpen the VAE decoder (spots stay spots); encoder and latents unchanged"
    )
    decoder.add_argument("--model", type=Path, default=None, help="pipeline folder; default: the shipped toy model")
    decoder.add_argument("--out", type=Path, default=None, help="default: the --model folder, rewritten in place")
    decoder.add_argument("--steps", type=int, default=1500)
    decoder.add_argument("--batch-size", type=int, default=32)
    decoder.add_argument("--lr", type=float, default=5e-4)
    decoder.add_argument("--detail-weight", type=float, default=4.0)
    decoder.add_argument("--spotted-share", type=float, default=0.5)
    decoder.add_argument("--seed", type=int, default=0)
    decoder.add_argument("--threads", type=int, default=1)
    decoder.set_defaults(func=run_decoder)

    export = subparsers.add_parser(
        "export", help="pretraining step 3: a pretrain_toy run as the shipped model=toy base"
    )
    export.add_argument("run_dir", type=Path)
    export.add_argument("--out", type=Path, default=None, help="default: the package's toy model folder")
    export.set_defaults(func=run_export)

    study = subparsers.add_parser(
        "study", help="the quickstart over several training seeds, with and without prior preservation, measured"
    )
    study.add_argument("--seeds", nargs="+", default=["0-4"], help="training seeds: `0-19`, `5 6 7`, `0-4 10`")
    study.add_argument("--out", type=Path, default=Path("outputs/toy_study"))
    study.add_argument("-o", "--override", action="append", default=[], help="a Hydra override for the quickstart")
    study.add_argument("--guidance", type=float, default=None, help="guidance scale of the measured generations")
    study.add_argument("--no-baseline", action="store_true", help="skip the runs without prior preservation")
    study.add_argument(
        "--samples", type=int, default=None, help="generations per prompt (default 32; 160 narrows each seed's figure)"
    )
    study.add_argument(
        "--reuse",
        action="store_true",
        help="measure runs already under --out (same seed and overrides), train the rest",
    )
    study.set_defaults(func=run_study)

    masks = subparsers.add_parser("masks", help="generated masks (<stem>.mask.png) for toy-world images")
    masks.add_argument("folder", help="images of a toy-world subject on plain backgrounds")
    masks.add_argument("--busy", default=None, help="instead: write the subject pasted on busy backgrounds here")
    masks.add_argument("--seed", type=int, default=0)
    masks.set_defaults(func=run_masks)


def run_world(args: argparse.Namespace) -> int:
    from sdft.toy.world import write_dataset

    paths = write_dataset(args.out, args.count, args.seed)
    print(f"wrote {len(paths)} images + captions to {args.out}")
    return 0


def run_vae(args: argparse.Namespace) -> int:
    import torch

    from sdft.toy.train_vae import pretrain_vae

    torch.set_num_threads(args.threads)
    history, seconds = pretrain_vae(args.out, args.steps, args.batch_size, args.lr, args.init, args.seed)
    print(f"VAE trained in {seconds:.0f} s (final loss {history[-1]:.4f}); start pipeline in {args.out}")
    return 0


def run_decoder(args: argparse.Namespace) -> int:
    import shutil

    import torch

    from sdft.models.toy_weights import TOY_MODEL_DIR
    from sdft.toy.measure import CONF_DIR
    from sdft.toy.refine_decoder import refine_decoder

    torch.set_num_threads(args.threads)
    model = args.model or TOY_MODEL_DIR
    out = args.out or model
    if out != model:
        shutil.copytree(model, out, dirs_exist_ok=True)
    facts = refine_decoder(
        model,
        out,
        CONF_DIR.parent / "datasets" / "toy_subject",
        args.steps,
        card_dir=out.parent if out == TOY_MODEL_DIR else None,  # the shipped model: its card's figures too
        batch_size=args.batch_size,
        lr=args.lr,
        detail_weight=args.detail_weight,
        spotted_share=args.spotted_share,
        seed=args.seed,
    )
    print(json.dumps(facts, indent=2))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from sdft.models.toy_weights import TOY_MODEL_DIR
    from sdft.toy.export import export

    print(json.dumps(export(args.run_dir, args.out or TOY_MODEL_DIR), indent=2))
    return 0


def run_study(args: argparse.Namespace) -> int:
    from sdft.toy import study
    from sdft.toy.control import GUIDANCE

    seeds = study.parse_seeds(args.seeds)  # bad seeds fail here, before any training
    guidance = GUIDANCE if args.guidance is None else args.guidance
    samples = study.SAMPLES if args.samples is None else args.samples
    if samples < 1:
        from sdft.errors import ConfigError

        raise ConfigError(f"--samples {samples}: give at least 1 generation per prompt (the measure's default is 32).")
    print(study.run_study(seeds, args.out, args.override, not args.no_baseline, guidance, samples, args.reuse))
    return 0


def run_masks(args: argparse.Namespace) -> int:
    from sdft.toy.masks import write_busy_subject, write_masks

    written = write_busy_subject(args.folder, args.busy, args.seed) if args.busy else write_masks(args.folder)
    print(f"wrote {len(written)} {'images + masks' if args.busy else 'masks'}")
    return 0
