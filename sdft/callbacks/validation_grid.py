"""Validation grids: fixed prompts x fixed seeds rendered with the current weights, one labelled PNG."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from PIL import Image

from sdft.callbacks.pipeline_parts import PipelineParts
from sdft.embeddings.tokens import collapse_prompt
from sdft.images_grid import make_grid, tile_size
from sdft.memory import drop_resident_pages, trim_heap
from sdft.families import family_of, module_pipeline
from sdft.models.text import prompt_embeds
from sdft.models.params import text_towers

log = logging.getLogger(__name__)


class ValidationGrid(L.Callback):
    """Renders the grid every N steps, at the end (and optionally before training); writes <phase_dir>/grids/*.png."""

    def __init__(self, phase_dir: Path, prompts: list[str], cb, resolution: int, parts: PipelineParts):
        """`cb`: the `callbacks` config section (validation_*); `resolution`: data.resolution, unless
        callbacks.validation_resolution is set."""
        self.grid_dir = Path(phase_dir) / "grids"
        self.prompts, self.seeds = list(prompts), list(cb.validation_seeds)
        self.resolution = cb.validation_resolution or resolution
        self.steps, self.guidance = cb.validation_steps, cb.validation_guidance
        self.negative_prompt = cb.validation_negative_prompt
        self.every_n_steps, self.at_start = cb.validation_every_n_steps, cb.validation_at_start
        self.tokenizer, self.scheduler, self.clip_skip = parts.tokenizer, parts.scheduler, parts.clip_skip
        self.tokenizer_2 = parts.tokenizer_2  # SDXL's second tokenizer: grids use the SDXL pipeline
        self.written: list[Path] = []
        self._last_step = -1

    def render(self, module: L.LightningModule) -> Image.Image:
        """The grid for the module's current weights (models put in eval for sampling, then restored)."""
        rows = self.sample(module, self.prompts, self.seeds)
        return make_grid(rows, self.prompts, self.seeds, tile_size(self.resolution))

    @torch.no_grad()
    def sample(self, module: L.LightningModule, prompts: list[str], seeds: list[int]) -> list[list[Image.Image]]:
        """One row of images per prompt (one per seed) with the grid's sampler settings and the current weights."""
        return self._sampling(module, lambda pipe: [self._row(pipe, [p] * len(seeds), seeds) for p in prompts])

    @torch.no_grad()
    def sample_pairs(self, module: L.LightningModule, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        """One image per (prompt, seed) pair, all in one pipeline call: the likeness meter's batch
        (sdft/callbacks/likeness.py)."""
        return self._sampling(module, lambda pipe: self._row(pipe, prompts, seeds))

    def _sampling(self, module: L.LightningModule, render):
        """`render(pipe)` with the module's current weights as a pipeline, in eval mode (restored after)."""
        was_training = module.training
        module.eval()
        frozen_dtype = module.vae.dtype  # mixed frozen/trained dtypes need autocast
        autocast = torch.autocast(module.device.type, dtype=frozen_dtype, enabled=frozen_dtype != torch.float32)
        # the VAE decodes a row's images one at a time (diffusers' slicing): decoding all seeds at once was the run's
        # peak memory at SD 1.5 size on a CPU (issue #21); only here, so the training latents' encoding is untouched
        slicing, module.vae.use_slicing = getattr(module.vae, "use_slicing", False), True
        try:
            with autocast:
                pipe = module_pipeline(module, self.tokenizer, self.tokenizer_2, self.scheduler)  # SD 1.x or SDXL
                return render(pipe)
        finally:
            module.vae.use_slicing = slicing
            module.train(was_training)

    def _row(self, pipe, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        """One image per (prompt, seed) pair in one pipeline call."""
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        n = len(seeds)
        if family_of(pipe).pipeline_encodes_prompts:  # SDXL: hand it the prompt as written (sdft/embeddings)
            vocab = pipe.tokenizer.get_added_vocab()
            embeds = {
                "prompt": [collapse_prompt(p, vocab) for p in prompts],
                "negative_prompt": [self.negative_prompt] * n,
            }
        else:
            embeds = prompt_embeds(pipe, list(prompts), [self.negative_prompt] * n, self.clip_skip)  # clip skip: A1111
        return pipe(
            **embeds,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance,
            height=self.resolution,
            width=self.resolution,
            generator=generators,
            callback_on_step_end=_give_back_text_encoders,
        ).images

    def write(self, trainer: L.Trainer, module: L.LightningModule, tag: str) -> Path | None:
        if not (self.prompts and self.seeds):
            return None  # validation_seeds=[] turns grids off
        trim_heap()  # the training step's freed activations go back to the system before sampling (sdft/memory.py)
        grid = self.render(module)
        self.grid_dir.mkdir(parents=True, exist_ok=True)
        path = self.grid_dir / f"{tag}.png"
        grid.save(path)
        self.written.append(path)
        log_grid(trainer, grid, tag)
        log.info("Validation grid: %s", path)
        return path

    def state_dict(self) -> dict:  # a resumed run lists the grids written before the interruption too
        return {"written": [str(p) for p in self.written], "last_step": self._last_step}

    def load_state_dict(self, state: dict) -> None:
        self.written, self._last_step = [Path(p) for p in state["written"]], state["last_step"]

    def on_train_start(self, trainer: L.Trainer, module) -> None:
        if self.at_start and trainer.global_step == 0 and trainer.is_global_zero:
            self.write(trainer, module, f"step_{trainer.global_step:06d}")

    def on_train_batch_end(self, trainer: L.Trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if (
            not self.every_n_steps
            or step == 0
            or step % self.every_n_steps
            or step == self._last_step
            or step >= trainer.max_steps
            or not trainer.is_global_zero
        ):
            return
        self._last_step = step
        self.write(trainer, module, f"step_{step:06d}")

    def on_train_end(self, trainer: L.Trainer, module) -> None:
        if trainer.is_global_zero:
            self.write(trainer, module, f"step_{trainer.global_step:06d}_final")


def _give_back_text_encoders(pipe, step: int, timestep, outputs: dict) -> dict:
    """After the first denoising step (the row's prompts are encoded) the text encoders' memory-mapped weights leave
    the resident set (sdft/memory.py: only unmodified file pages, mapped in again by the next row's encoding): with
    them resident beside the U-Net and the VAE decoder a CPU grid was the run's memory peak (issue #21)."""
    if step == 0:
        drop_resident_pages(text_towers(pipe))
    return outputs


def log_grid(trainer: L.Trainer, grid: Image.Image, tag: str, key: str = "validation/grid") -> None:
    """Send the grid (or another image: the likeness chart) to loggers that take images (W&B, TensorBoard); CSV keeps
    only the PNG on disk."""
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):  # WandbLogger
            logger.log_image(key=key, images=[grid], caption=[tag], step=trainer.global_step)
        elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoardLogger
            import numpy as np

            logger.experiment.add_image(key, np.asarray(grid), trainer.global_step, dataformats="HWC")
