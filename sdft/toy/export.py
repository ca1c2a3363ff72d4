"""Step 3 of the toy pretraining: ship a `+experiment=pretrain_toy` run as the `model=toy` base.

Writes the run's pipeline in fp16 safetensors to sdft/toy/model/, the model card's figures (loss curve, sample grid)
and training.json (steps, losses, wall times, prompt-control rate):

    sdft toy export outputs/pretrain_toy/<run>
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from diffusers import StableDiffusionPipeline
from PIL import Image, ImageDraw

from sdft.models.tokenizer_vocab import write_vocab_files
from sdft.models.toy_arch import TOY_WORDS
from sdft.toy.control import attribute_rates, grid, prompt_control_rate, sample
from sdft.toy.detector import accuracy
from sdft.models.toy_weights import TOY_MODEL_DIR, load_toy_pipeline
from sdft.toy.world import CLASSES, Scene


def read_losses(metrics_csv: Path, key: str = "train/loss") -> list[tuple[int, float]]:
    with open(metrics_csv, newline="") as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


def plot_curves(curves: list[tuple[str, list[tuple[int, float]]]], path: Path, size=(640, 220)) -> None:
    """One small line plot per curve, side by side (PIL only: the project does not depend on matplotlib)."""
    w, h = size
    img = Image.new("RGB", (w * len(curves), h), "white")
    d = ImageDraw.Draw(img)
    for k, (title, points) in enumerate(curves):
        x0, y0, x1, y1 = k * w + 50, 25, (k + 1) * w - 15, h - 30
        xs = np.array([p[0] for p in points], dtype=float)
        ys = np.array([p[1] for p in points], dtype=float)
        lo, hi = float(ys.min()), float(np.percentile(ys, 98))
        d.rectangle([x0, y0, x1, y1], outline=(120, 120, 120))
        pts = [
            (
                x0 + (x - xs.min()) / max(1.0, xs.max() - xs.min()) * (x1 - x0),
                y1 - (min(y, hi) - lo) / max(1e-9, hi - lo) * (y1 - y0),
            )
            for x, y in zip(xs, ys)
        ]
        d.line(pts, fill=(30, 90, 200), width=1)
        d.text((x0, 6), title, fill="black")
        d.text((x0 - 45, y0), f"{hi:.3f}", fill="black")
        d.text((x0 - 45, y1 - 10), f"{lo:.3f}", fill="black")
        d.text((x0, y1 + 6), f"step {int(xs.min())}", fill="black")
        d.text((x1 - 70, y1 + 6), f"step {int(xs.max())}", fill="black")
    img.save(path)


GRID_LOOKS = [
    ("blue", "yellow", "plain"),
    ("blue", "yellow", "spots"),
    ("blue", "yellow", "stripes"),
    ("red", "green", "spots"),
    ("purple", "yellow", "stripes"),
    ("green", "red", "plain"),
]


def sample_grid(pipe, path: Path) -> None:
    """Rows: classes (full captions, columns GRID_LOOKS on white), then `a dog` at six seeds."""
    prompts = [Scene(k, c, s, p).caption() for k in CLASSES for c, s, p in GRID_LOOKS]
    prompts += ["a dog"] * len(GRID_LOOKS)
    grid(sample(pipe, prompts, seed=0), cols=len(GRID_LOOKS), scale=3).save(path)


IDENTIFIERS = ("sks", "ohwx")  # DreamBooth's usual rare tokens
IDENTIFIER_NORM = 0.45  # about the embedding norm of the world's colour words after pretraining


@torch.no_grad()
def boost_identifiers(pipe, norm: float = IDENTIFIER_NORM) -> None:
    """Scale the (never trained, random) embeddings of the identifier tokens up to the norm of trained words.

    Pretraining never shows `sks`, so its embedding keeps its small random init and a 200-step LoRA cannot tell
    `a sks dog` from `a dog` (both drift alike); at the norm of a trained word it is a distinct, meaningless token,
    as rare tokens are in real CLIP. Its direction stays random.
    """
    weight = pipe.text_encoder.get_input_embeddings().weight
    for word in IDENTIFIERS:
        i = pipe.tokenizer.convert_tokens_to_ids(word + "</w>")
        weight[i] *= norm / weight[i].norm()


def export(run_dir: Path, out: Path = TOY_MODEL_DIR) -> dict:
    """Write a pretraining run as the toy model (fp16, identifiers boosted) into `out`, with the card's figures
    beside it. A run that continued from an exported toy model (model.path=toy or such a folder: pretraining step 6,
    conf/experiment/pretrain_toy_more.yaml) keeps that model's facts and adds its own under "continued"."""
    run_dir, card_dir = Path(run_dir), Path(out).parent  # the card and its figures sit beside the model folder
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    start = TOY_MODEL_DIR if cfg["model"]["path"] == "toy" else Path(cfg["model"]["path"])
    previous = json.loads((start / "training.json").read_text()) if (start / "training.json").is_file() else None
    pipe = StableDiffusionPipeline.from_pretrained(
        summary["output"], local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    boost_identifiers(pipe)
    pipe.to(torch.float16)
    shutil.rmtree(out, ignore_errors=True)
    pipe.save_pretrained(out, safe_serialization=True)
    write_vocab_files(out / "tokenizer", TOY_WORDS)

    losses = read_losses(run_dir / "logs" / "main" / "metrics.csv")
    last = [v for _, v in losses[-20:]]
    if previous is None:
        vae_history = json.loads((start / "vae_history.json").read_text())
        vae_curve = list(enumerate(vae_history["reconstruction_loss"]))
        curves = [
            ("U-Net + text encoder: train/loss (min-SNR weighted eps MSE)", losses),
            ("VAE: reconstruction loss (MSE + 0.5 L1)", vae_curve),
        ]
        plot_curves(curves, card_dir / "loss_curve.png")
    else:
        curve = card_dir / f"loss_curve_continued_{len(previous.get('continued', [])) + 1}.png"
        plot_curves([("continued pretraining: train/loss (min-SNR weighted eps MSE)", losses)], curve)

    pipe = load_toy_pipeline(out)
    sample_grid(pipe, card_dir / "samples.png")
    rate, rows = prompt_control_rate(pipe, n=96)
    control = {
        "prompt_control_rate_n96": round(rate, 3),
        "prompt_control_per_attribute_n96": {k: round(v, 3) for k, v in attribute_rates(rows).items()},
        "weights_bytes": sum(p.stat().st_size for p in out.rglob("*.safetensors")),
        "exported": time.strftime("%Y-%m-%d"),
    }
    if previous is None:
        facts = {
            "steps": summary["steps"],
            "train_seconds": summary["train_seconds"],
            "vae_steps": len(vae_history["reconstruction_loss"]),
            "vae_seconds": vae_history["seconds"],
            "final_loss_mean_last_20_logged": round(float(np.mean(last)), 4),
            "vae_final_reconstruction_loss": round(vae_history["reconstruction_loss"][-1], 4),
            "instance_images": summary["instance_images"],
            **control,
            "detector_accuracy_n1000": {k: round(v, 4) for k, v in accuracy(1000).items()},
        }
    else:
        step = {
            "steps": summary["steps"],
            "train_seconds": summary["train_seconds"],
            "lr": cfg["optim"]["lr"],
            "final_loss_mean_last_20_logged": round(float(np.mean(last)), 4),
            "before": {k: previous[k] for k in ("prompt_control_rate_n96", "prompt_control_per_attribute_n96")},
        }
        facts = {**previous, **control, "continued": [*previous.get("continued", []), step]}
    (out / "training.json").write_text(json.dumps(facts, indent=2) + "\n")
    return facts


if __name__ == "__main__":  # the command line moved to sdft/cli/ (issue 27)
    from sdft.errors import command_moved

    command_moved("sdft.toy.export", "sdft toy export")
