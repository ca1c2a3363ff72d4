"""The likeness meter's cost: its time as a share of the run.

1. Measured: the meter's own seconds (summary.json `likeness.seconds`) over the phase's training seconds, for finished
   runs (e.g. bench/likeness_study.py's quickstart runs, which use the quickstart's settings), or one quickstart run
   trained here with `--train`.
2. Computed for SD 1.5 at 512 px: measurements x images per measurement x sampling steps x seconds per sampling step
   (classifier-free guidance: 2 U-Net evaluations) over training steps x seconds per training step. Default speeds:
   `--sample-step-s` / `--train-step-s` (pass figures measured on your card). Without them the ratio comes from U-Net
   evaluations: a sampling step = 2 forward passes, a LoRA training step = 1 forward + 1 backward (input gradients
   through the frozen layers, about one more forward) + a third for the VAE / text encoder / optimizer: 2:3.

    python bench/likeness_cost.py --runs outputs/likeness_study/quickstart-seed*
    OMP_NUM_THREADS=2 python bench/likeness_cost.py --measure-sd15 256     # both speeds measured here (fp32 CPU)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def measured(run_dirs: list[Path]) -> list[dict]:
    rows = []
    for run in run_dirs:
        s = json.loads((run / "summary.json").read_text())
        lk = s.get("likeness") or {}
        if "seconds" not in lk:
            continue
        rows.append(
            {
                "run": str(run),
                "train_s": s["train_seconds"],
                "meter_s": lk["seconds"],
                "share": lk["seconds"] / s["train_seconds"],
                "measurements": len(json.loads(Path(lk["table"]).with_suffix(".json").read_text())["rows"]),
            }
        )
    return rows


def sd15_share(
    steps: int,
    every: int,
    images: int,
    sample_steps: int,
    sample_step_s: float,
    train_step_s: float,
    budget: float,
    images_per_step: int = 1,
):
    """(measured steps, meter seconds, training seconds, share of the run) under callbacks.likeness.max_share=budget
    (0: every checkpoint), following LikenessCallback.within_budget: a step checkpoint only if it and the final one fit
    in max_share of the whole run's training (the first one's cost estimated from the training step with
    SAMPLING_STEP_PER_TRAINING_IMAGE, later ones as timed); the final always.
    `train_step_s`: one training step of `images_per_step` images (prior preservation: instance + class = 2)."""
    from sdft.callbacks.likeness import SAMPLING_STEP_PER_TRAINING_IMAGE

    per = images * sample_steps * sample_step_s
    estimate = images * sample_steps * SAMPLING_STEP_PER_TRAINING_IMAGE * train_step_s / images_per_step
    checkpoints = list(range(every, steps, every)) if every else []
    done: list[int] = []
    for step in checkpoints:
        cost = len(done) * per + (per if done else estimate) + (per if done else estimate)  # this one + the final
        if not budget or cost <= budget * steps * train_step_s:
            done.append(step)
    done.append(steps)
    meter, train = len(done) * per, steps * train_step_s
    return done, meter, train, meter / (train + meter)


def measure_sd15(resolution: int, rounds: int = 2) -> tuple[float, float]:
    """Seconds of one classifier-free-guidance sampling step (the U-Net on a batch of 2: conditional + unconditional)
    and of one training step's U-Net work (forward + backward of one image, LoRA-like: frozen weights, gradients
    through the activations) of the SD 1.5 U-Net (random weights, sdft/models/sd15_arch.py) at `resolution`, fp32 CPU,
    in one process so that both see the same machine load; the median of `rounds` after a warm-up."""
    import sys

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from timing import median_seconds

    from sdft.models.sd15_arch import build_sd15_unet

    unet = build_sd15_unet().eval().requires_grad_(False)
    side = resolution // 8
    text = torch.randn(2, 77, 768)

    def sample_step():
        with torch.no_grad():
            unet(torch.randn(2, 4, side, side), torch.tensor([500, 500]), text)

    def train_step():
        x = torch.randn(1, 4, side, side, requires_grad=True)  # stands in for the LoRA parameters' gradient path
        unet(x, torch.tensor([500]), text[:1]).sample.square().mean().backward()

    return median_seconds(sample_step, rounds), median_seconds(train_step, rounds)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, nargs="*", default=[])
    p.add_argument("--images", type=int, default=10, help="images per measurement (defaults: 4 + 4 + 2 x 1)")
    p.add_argument("--sample-steps", type=int, default=20, help="callbacks.validation_steps")
    p.add_argument("--sample-step-s", type=float, default=2.0, help="relative cost of one CFG sampling step")
    p.add_argument("--train-step-s", type=float, default=3.0, help="relative cost of one LoRA training step")
    p.add_argument("--max-share", type=float, default=0.1, help="callbacks.likeness.max_share")
    p.add_argument(
        "--train-image-s", type=float, default=None, help="one training image's U-Net work (default: --train-step-s)"
    )
    p.add_argument("--measure-sd15", type=int, default=None, metavar="RES", help="measure both speeds here (fp32 CPU)")
    args = p.parse_args(argv)
    if args.measure_sd15:
        args.sample_step_s, args.train_image_s = measure_sd15(args.measure_sd15)
        print(
            f"measured at {args.measure_sd15} px: sampling step {args.sample_step_s:.2f} s, training step's U-Net "
            f"{args.train_image_s:.2f} s per image"
        )
    image_s = args.train_image_s or args.train_step_s
    for r in measured(list(args.runs)):
        print(
            f"{r['run']}: meter {r['meter_s']:.1f} s of {r['train_s']:.1f} s training "
            f"({100 * r['share']:.1f} %), {r['measurements']} measurements"
        )
    print(
        f"\n{args.images} images x {args.sample_steps} sampling steps per measurement, sampling step : one training "
        f"image = {args.sample_step_s} : {image_s}"
    )
    print(
        "| training images per step | steps | checkpoint every | max_share | measured steps | "
        "meter / training (step-equivalents) | share |"
    )
    print("|---|---|---|---|---|---|---|")
    for per_step in (1, 2):  # batch 1 without / with prior preservation (the default: an instance and a class image)
        step_s = image_s * per_step
        for steps, every in [(500, 100), (800, 0), (1000, 250), (1500, 250), (2000, 500), (3000, 500)]:
            for budget in (0.0, args.max_share):
                done, meter, train, share = sd15_share(
                    steps, every, args.images, args.sample_steps, args.sample_step_s, step_s, budget, per_step
                )
                print(
                    f"| {per_step} | {steps} | {every} | {budget} | {', '.join(map(str, done))} | "
                    f"{meter / step_s:.0f} / {steps} | {100 * share:.1f} % |"
                )


if __name__ == "__main__":
    main()
