"""The fixed-noise diffusion loss: the loss on given images with their prompts at fixed noise and fixed timesteps
(seeded), so only the weights change between measurements. Measured by the run's `val/fixed_noise_loss` callback
(sdft/callbacks/fixed_noise_loss.py), `sdft eval`'s instance fidelity and the doctor's loss probe."""

from __future__ import annotations

import torch

from sdft.data.images import load_rgb, resize_crop, to_tensor
from sdft.memory import trim_heap

TIMESTEPS = (100, 300, 500, 700, 900)  # spread over the schedule; every image is measured at each of them


class FixedNoiseMeter:
    """`measure(module, examples, tokenizer)`: the mean loss over the first `max_images` examples x TIMESTEPS, with a
    generator of its own (the trained batches' randomness, and with it exact resume, is untouched)."""

    def __init__(self, resolution: int, max_images: int = 8, seed: int = 1234):
        self.resolution, self.max_images, self.seed = resolution, max_images, seed
        self._batch: dict | None = None
        self._latents: torch.Tensor | None = None

    def _fixed_batch(self, module, examples, tokenizer) -> dict:
        if self._batch is None:
            examples = examples[: self.max_images]
            pixels = torch.stack([to_tensor(resize_crop(load_rgb(e.path), self.resolution, True)) for e in examples])
            ids = tokenizer(
                [e.prompt for e in examples],
                padding="max_length",
                truncation=True,
                max_length=tokenizer.model_max_length,
                return_tensors="pt",
            ).input_ids
            self._batch = {"pixel_values": pixels, "input_ids": ids}
        return {k: v.to(module.device) for k, v in self._batch.items()}

    @torch.no_grad()
    def measure(self, module, examples, tokenizer) -> float:
        trim_heap()  # the training step's freed activations go back to the system first (sdft/memory.py)
        batch = self._fixed_batch(module, examples, tokenizer)
        was_training = module.training
        module.eval()
        try:
            gen = torch.Generator("cpu").manual_seed(self.seed)
            losses = []
            n = batch["pixel_values"].shape[0]
            # the VAE mean and the text states do not depend on the timestep: computed once, not per timestep; the VAE
            # is never trained, so its means are kept from the first measurement (no encoder activations later on)
            if self._latents is None:
                self._latents = module.encode_latents(batch["pixel_values"], sample=False)
            latents = self._latents
            text = module.conditioning.encode(module, batch["input_ids"])  # the family's encoded text (SD 1.x, SDXL)
            for t in TIMESTEPS:
                noise = torch.randn(latents.shape, generator=gen).to(latents.device)
                timesteps = torch.full((n,), t, device=latents.device, dtype=torch.long)
                losses.append(module.loss_at(latents, noise, timesteps, text).mean())
            return float(torch.stack(losses).mean())
        finally:
            module.train(was_training)
