"""Step 1 of the toy pretraining: train the toy VAE, then write the start pipeline for the project's trainer.

Hand-written on purpose: the project's trainer (sdft/run/train.py, sdft/training/module.py) trains a U-Net and text encoder on a
frozen VAE's latents; it has no autoencoder objective. This loop is the whole VAE recipe (reconstruction MSE + L1 and a
small KL term on freshly drawn toy scenes), a few minutes on one CPU thread.

    sdft toy vae --out outputs/toy_init --steps 900

The output folder is a diffusers pipeline (trained VAE, random U-Net and text encoder, the toy tokenizer) that
`+experiment=pretrain_toy` starts from (step 2).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from sdft.models.tokenizer_vocab import write_vocab_files
from sdft.models.toy_arch import TOY_WORDS, init_pipeline, toy_vae
from sdft.toy.world import random_scene, render


def batch(rng: random.Random, size: int, spotted_share: float = 0.0) -> torch.Tensor:
    """`size` fresh toy scenes in [-1, 1], (B, 3, 32, 32); with `spotted_share`, that share of them (drawn) spotted."""
    arrays = []
    for _ in range(size):
        scene = random_scene(rng)
        if spotted_share and rng.random() < spotted_share:
            scene = replace(scene, pattern="spots")
        arrays.append(np.asarray(render(scene, seed=rng.randrange(1 << 30)), dtype=np.float32))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


def one_cycle_loop(params, steps: int, lr: float, step_loss, log: str, log_every: int) -> list[float]:
    """The toy VAE's training loops (steps 2 and 5; the project's trainer has no autoencoder objective): AdamW
    without weight decay on a one-cycle schedule (5 % warm-up) over `steps` calls of `step_loss()`, which returns
    (the loss to minimise, the figure to record); `log` formats (step, figure) every `log_every` steps and at the end.
    Returns the recorded figures."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    history = []
    for step in range(steps):
        loss, figure = step_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(figure))
        if step % log_every == 0 or step == steps - 1:
            print(log.format(step, history[-1]), flush=True)
    return history


def train_vae(
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    init: str | Path | None = None,
):
    """Train the toy VAE (from scratch, or on from the VAE folder `init`); returns it with `scaling_factor` set to
    1 / std of the latents, and the loss history."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    vae = (AutoencoderKL.from_pretrained(init, torch_dtype=torch.float32) if init else toy_vae()).train()

    def step_loss():
        x = batch(rng, batch_size)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec = (recon - x).pow(2).mean() + 0.5 * (recon - x).abs().mean()
        return rec + kl_weight * posterior.kl().mean(), rec

    history = one_cycle_loop(
        list(vae.parameters()), steps, lr, step_loss, "vae step {}: reconstruction loss {:.4f}", 50
    )
    vae.eval()
    with torch.no_grad():
        z = torch.cat([vae.encode(batch(rng, 64)).latent_dist.mode() for _ in range(4)])
    vae.register_to_config(scaling_factor=round(1.0 / float(z.std()), 5))
    return vae, history


def pretrain_vae(
    out: str | Path, steps: int, batch_size: int, lr: float, init: str | None = None, seed: int = 0
) -> tuple[list[float], float]:
    """Pretraining step 1: train the VAE, write the start pipeline (and its tokenizer) to `out` and the loss history
    to `out/vae_history.json` (a continued VAE's history continues the earlier one). Returns (history, seconds)."""
    start = time.time()
    vae, history = train_vae(steps, batch_size, lr, seed=seed, init=init)
    out = Path(out)
    init_pipeline(vae).save_pretrained(out, safe_serialization=True)
    write_vocab_files(out / "tokenizer", TOY_WORDS)
    if init:  # a continued VAE: its history continues the earlier one
        old = json.loads((Path(init).parent / "vae_history.json").read_text())
        history, seconds = old["reconstruction_loss"] + history, old["seconds"] + time.time() - start
    else:
        seconds = time.time() - start
    (out / "vae_history.json").write_text(json.dumps({"reconstruction_loss": history, "seconds": round(seconds, 1)}))
    return history, time.time() - start


if __name__ == "__main__":  # the command line moved to sdft/cli/ (issue 27)
    from sdft.errors import command_moved

    command_moved("sdft.toy.train_vae", "sdft toy vae")
