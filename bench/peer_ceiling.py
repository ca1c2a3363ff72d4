#!/usr/bin/env python
"""The most an exact cache can win over diffusers' train_dreambooth_lora.py step (issue #21), in one process.

The peer's step: VAE encode + text encoder + U-Net forward/backward + clip + AdamW, every step. sdft's exact caches
remove the first two; the U-Net part is the same arithmetic in both tools. So (peer step) / (U-Net-only step),
timed here alternately on the same modules, bounds sdft's speed-up at exact fp32. Also timed: the U-Net-only step
under bf16 autocast and in channels_last (neither exact: other rounding).

    python bench/peer_ceiling.py /tmp/peer-bench/sd15-random --resolution 256 --rounds 3

The model folder is the one bench/peer.py builds (SD 1.5 shape, random weights) or any SD 1.x diffusers folder.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from peft import LoraConfig
from transformers import CLIPTextModel


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(args.folder, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(args.folder, subfolder="vae")
    text_encoder = CLIPTextModel.from_pretrained(args.folder, subfolder="text_encoder")
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False).eval()
    # the peer's LoRA: rank 4 on the attention projections
    unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_k", "to_q", "to_v", "to_out.0"])
    )
    params = [q for q in unet.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    pixels = torch.randn(2, 3, args.resolution, args.resolution)  # 1 instance + 1 class image
    ids = torch.randint(0, text_encoder.config.vocab_size, (2, text_encoder.config.max_position_embeddings))
    scale = vae.config.scaling_factor
    with torch.no_grad():
        cached = (vae.encode(pixels).latent_dist.sample() * scale, text_encoder(ids)[0])

    def step(encode: bool, autocast: bool = False) -> float:
        start = time.perf_counter()
        if encode:
            with torch.no_grad():
                latents, text = vae.encode(pixels).latent_dist.sample() * scale, text_encoder(ids)[0]
        else:
            latents, text = cached
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, 1000, (latents.shape[0],))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            pred = unet(latents + noise, timesteps, text).sample
        F.mse_loss(pred.float(), noise).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    variants = {
        "peer step (encode every step)": dict(encode=True),
        "U-Net only (exact cache)": dict(encode=False),
        "U-Net only, bf16 autocast": dict(encode=False, autocast=True),
    }
    for kw in variants.values():  # warm-up: first calls allocate and pick kernels
        step(**kw)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        order = list(variants.items()) if r % 2 == 0 else list(variants.items())[::-1]
        for name, kw in order:
            times[name].append(step(**kw))
    unet.to(memory_format=torch.channels_last)  # last: it changes the module
    step(encode=False)
    times["U-Net only, channels_last"] = [step(encode=False) for _ in range(args.rounds)]

    peer = statistics.median(times["peer step (encode every step)"])
    print(f"SD 1.x U-Net from {args.folder}, {args.resolution}px, batch 2, {torch.get_num_threads()} threads")
    for name, values in times.items():
        med = statistics.median(values)
        print(
            f"{name:32s} median {med:7.2f} s/step  x{peer / med:.2f} vs the peer's step  {[round(v, 2) for v in values]}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
