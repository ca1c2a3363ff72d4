"""Step 5 of the toy pretraining (issue 34; sdft/toy/MODEL_CARD.md, Recipe): sharpen the toy VAE's decoder so that three spots stay three spots.

The VAE of steps 1-4 (train_vae.py) decodes the subject's three yellow spots, 2 px wide and 1-2 px apart at 32 px, as
one yellow band: its loss (MSE + L1 over the whole image) barely sees them, so no LoRA recipe could learn spots. This
step trains the decoder alone on a loss weighted towards detail (pixels that differ from their 3x3 neighbourhood mean)
with half of the scenes drawn spotted. The encoder is frozen, so the latents the U-Net was pretrained on, and every
cached latent, stay exactly the same; only the pixels that latents decode to change. Hand-written for the same reason
as train_vae.py (the project's trainer has no autoencoder objective).

    sdft toy decoder --steps 1500   # rewrites the shipped model's VAE and the card's figures (sdft/toy/MODEL_CARD.md)
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from PIL import Image

from sdft.toy.detector import detect, separate_spots
from sdft.toy.train_vae import batch, one_cycle_loop
from sdft.toy.world import random_scene, render

DECODER_PREFIXES = ("decoder.", "post_quant_conv.")  # what the step trains; the encoder and quant_conv stay frozen
EVAL_SEED = 123  # the spotted scenes reconstruction_spots measures


def detail_weights(x: torch.Tensor, detail_weight: float) -> torch.Tensor:
    """Per-pixel loss weights, (B, 1, H, W): 1 + detail_weight x (the pixel's distance from its 3x3 mean, over the
    batch's mean distance), so that edges, spots and stripes weigh more than flat areas."""
    blur = torch.ones(3, 1, 3, 3, dtype=x.dtype) / 9
    detail = (x - F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), blur, groups=3)).abs().sum(1, keepdim=True)
    return 1 + detail_weight * detail / detail.mean().clamp_min(1e-8)


def finetune_decoder(
    vae: AutoencoderKL,
    steps: int,
    batch_size: int = 32,
    lr: float = 5e-4,
    detail_weight: float = 4.0,
    spotted_share: float = 0.5,
    seed: int = 0,
) -> list[float]:
    """Train `vae`'s decoder in place on freshly drawn scenes (detail-weighted MSE + 0.5 L1 of the reconstruction from
    a posterior sample, AdamW one-cycle); returns the loss history. The encoder's weights are not touched."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    for name, p in vae.named_parameters():
        p.requires_grad_(name.startswith(DECODER_PREFIXES))
    params = [p for p in vae.parameters() if p.requires_grad]
    vae.train()

    def step_loss():
        x = batch(rng, batch_size, spotted_share)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
            w = detail_weights(x, detail_weight)
        recon = vae.decode(z).sample
        loss = (w * ((recon - x).pow(2) + 0.5 * (recon - x).abs())).mean() / w.mean()
        return loss, loss.detach()

    history = one_cycle_loop(params, steps, lr, step_loss, "decoder step {}: detail-weighted loss {:.4f}", 100)
    vae.eval().requires_grad_(False)
    return history


def _roundtrip(vae: AutoencoderKL, image: Image.Image) -> Image.Image:
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0
    with torch.no_grad():
        y = vae.decode(vae.encode(x.to(vae.dtype)).latent_dist.mode()).sample.float().clamp(-1, 1)
    return Image.fromarray(((y[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8))


def reconstruction_spots(vae: AutoencoderKL, images=None, n: int = 96) -> dict[str, float | None]:
    """Of `images` (default: `n` random spotted scenes, seed EVAL_SEED) encoded and decoded by `vae`: the share whose
    reconstruction shows three separate spots (`spots`), and whose detected attributes equal the original's
    (`attributes`)."""
    if images is None:
        rng = random.Random(EVAL_SEED)
        images = []
        for i in range(n):
            images.append(render(replace(random_scene(rng), pattern="spots"), seed=i))
    if not images:  # a model folder without a subject: nothing to measure (not nan)
        return {"spots": None, "attributes": None}
    spots, same = [], []
    for image in images:
        found = detect(_roundtrip(vae, image))
        spots.append(separate_spots(found))
        same.append(found.attributes() == detect(image).attributes())
    return {"spots": round(float(np.mean(spots)), 4), "attributes": round(float(np.mean(same)), 4)}


def subject_images(folder: Path) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(Path(folder).glob("*.png"))]


def stored_dtype(folder: Path) -> torch.dtype:
    """The dtype of the weights in `folder`'s safetensors file (from_pretrained would report the dtype it loads in)."""
    from safetensors import safe_open

    (path,) = Path(folder).glob("*.safetensors")
    with safe_open(str(path), "pt") as f:
        return f.get_tensor(next(iter(f.keys()))).dtype


def refine_decoder(model: Path, out: Path, subject: Path, steps: int, card_dir: Path | None = None, **options) -> dict:
    """Fine-tune the decoder of the pipeline folder `model`'s VAE, write that VAE (in the dtype it was stored in) to
    `out/vae` and the figures before and after into `out/training.json` ("decoder_refinement"); returns them. With
    `card_dir`, the model card's samples.png and prompt-control figures are made again through the new decoder."""
    model, out = Path(model), Path(out)
    dtype = stored_dtype(model / "vae")
    vae = AutoencoderKL.from_pretrained(model / "vae", local_files_only=True, torch_dtype=torch.float32).eval()
    before = {
        "random_spotted": reconstruction_spots(vae),
        "subject": reconstruction_spots(vae, subject_images(subject)),
    }
    start = time.time()
    history = finetune_decoder(vae, steps, **options)
    seconds = time.time() - start
    vae.to(dtype).save_pretrained(out / "vae", safe_serialization=True)
    vae.to(torch.float32)  # measured as stored (fp16 for the shipped model), as the pipeline loads it
    after = {"random_spotted": reconstruction_spots(vae), "subject": reconstruction_spots(vae, subject_images(subject))}
    facts_path = out / "training.json"
    facts = json.loads(facts_path.read_text()) if facts_path.exists() else {}
    facts["decoder_refinement"] = {
        "steps": steps,
        **options,
        "seconds": round(seconds, 1),
        "final_loss_mean_last_20": round(float(np.mean(history[-20:])), 4),
        "reconstruction_before": before,
        "reconstruction_after": after,
    }
    if card_dir is not None:  # the card's samples and prompt-control figures, drawn through the new decoder
        from sdft.models.toy_weights import load_toy_pipeline
        from sdft.toy.control import attribute_rates, prompt_control_rate
        from sdft.toy.export import sample_grid

        pipe = load_toy_pipeline(out)
        sample_grid(pipe, Path(card_dir) / "samples.png")
        rate, rows = prompt_control_rate(pipe, n=96)
        facts["prompt_control_rate_n96"] = round(rate, 3)
        facts["prompt_control_per_attribute_n96"] = {k: round(v, 3) for k, v in attribute_rates(rows).items()}
    facts_path.write_text(json.dumps(facts, indent=2) + "\n")
    return facts["decoder_refinement"]
