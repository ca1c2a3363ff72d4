"""Samples and batches: instance + class (prior-preservation) images of one bucket, collated together.

A batch dict holds (docs/data.md):
  pixel_values (B,3,H,W) in [-1,1]           -- or latent_dist (B,8,H/8,W/8) when latents are cached
  input_ids (B,77)                            -- or encoder_hidden_states (B,77,D) when text outputs are cached
                                                 (SDXL: input_ids (B,2,77), or encoder_hidden_states and text_embeds)
  is_prior (B,) bool: class samples, after the instance samples
  loss_weight (B,) float: the concept's loss weight (instance samples), 1 for class samples
  n_instance: int, the number of instance samples (plain ints stay on the CPU: the step needs no device sync)
  plan: (epoch, number) ints, the batch's place in the batch plan; seeds the step's noise and makes resume exact
  time_ids (B,6) float: SDXL only (time_ids=True): original size, crop top-left, target size (sdft/families/base.py)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from sdft.data.buckets import BatchPlan
from sdft.data.captions import CaptionOptions, process_caption
from sdft.data.folders import Concept
from sdft.data.images import crop_box, load_rgb, to_tensor
from sdft.families.sdxl_text import sample_time_ids


@dataclass(frozen=True)
class Example:
    path: Path
    prompt: str  # the caption (trigger ensured) or the concept's prompt
    concept: Concept | None = None
    size: tuple[int, int] | None = None  # upright (w, h), when known
    resolution: int | None = None  # the resolution this sample trains at (multi-resolution data); None: the default

    @property
    def repeats(self) -> int:
        return self.concept.repeats if self.concept else 1

    def train_resolution(self, default: int) -> int:
        """Its own resolution, else its concept's, else `default` (data.resolution)."""
        own = self.resolution or (self.concept.resolution if self.concept else None)
        return int(own or default)

    @property
    def loss_weight(self) -> float:
        return self.concept.loss_weight if self.concept else 1.0

    @property
    def class_key(self) -> str | None:
        return self.concept.class_key if self.concept else None

    @property
    def caption_options(self) -> CaptionOptions:
        return self.concept.captions if self.concept else CaptionOptions()


@dataclass(frozen=True)
class SampleSpec:
    """Everything that decides a sample's pixels and text: the cache key's ingredients."""

    size: tuple[int, int]
    crop: tuple[int, int]  # (left, top) in the resized image
    flip: bool
    caption: str


class ImageTransform:
    """Load (size-aware), resize to cover, crop and flip one image into a [-1, 1] tensor."""

    def __init__(self, background: tuple[int, int, int] = (255, 255, 255)):
        self.background = tuple(background)

    def __call__(
        self,
        path: Path,
        size: tuple[int, int],
        crop: tuple[int, int],
        flip: bool,
        full_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        img = load_rgb(path, self.background, target=size)
        nw, nh = cover(full_size or img.size, size)  # from the file's full size, even if it was decoded reduced
        up = nw > img.size[0]
        img = img.resize((nw, nh), Image.Resampling.BICUBIC if up else Image.Resampling.LANCZOS)
        img = img.crop((crop[0], crop[1], crop[0] + size[0], crop[1] + size[1]))
        pixels = to_tensor(img)
        return pixels.flip(-1) if flip else pixels


def sample_rng(seed: int, epoch: int, number: int, position: int) -> random.Random:
    """Per-sample randomness (flip, random crop, caption shuffle/dropout): the same with or without caches."""
    return random.Random(f"{seed}/{epoch}/{number}/{position}")


class BucketDataset(Dataset):
    """Indexed by a BatchPlan; returns the collated batch (see the module docstring)."""

    def __init__(
        self,
        instances: list[Example],
        classes: list[Example],
        tokenizer,
        seed: int,
        center_crop: bool = True,
        background=(255, 255, 255),
        latents=None,
        texts: dict | None = None,
        masks=None,
        time_ids: bool = False,
    ):
        self.instances, self.classes, self.tokenizer, self.seed = instances, classes, tokenizer, seed
        self.center_crop = center_crop
        self.transform = ImageTransform(background)
        self.latents = latents  # callable (example, spec) -> latent_dist tensor, or None
        self.texts = texts  # caption -> the family's encoded text {name: tensor} (sdft/families/base.py), or None
        self.masks = masks  # callable (example, spec) -> (1, H, W) loss mask (sdft/data/masks.py), or None
        self.time_ids = time_ids  # SDXL: each sample's original size and crop, kept through buckets and caches

    def __len__(self) -> int:
        return len(self.instances)

    def tokens(self, prompt: str) -> torch.Tensor:
        return self.tokenizer(
            prompt,
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids[0]

    def spec(self, example: Example, size: tuple[int, int], rng: random.Random) -> SampleSpec:
        flip = bool(example.concept.flip) if example.concept else False
        flip = flip and rng.random() < 0.5
        if self.center_crop or example.size is None:
            crop = center_crop_of(example.size, size) if example.size else (0, 0)
        else:
            nw, nh = cover(example.size, size)
            crop = (rng.randint(0, nw - size[0]), rng.randint(0, nh - size[1]))
        caption = process_caption(example.prompt, example.caption_options, rng)
        return SampleSpec(size, crop, flip, caption)

    def sample(self, example: Example, spec: SampleSpec) -> dict:
        out = {}
        if self.latents is not None:
            out["latent_dist"] = self.latents(example, spec)
        else:
            out["pixel_values"] = self.transform(example.path, spec.size, spec.crop, spec.flip, example.size)
        if self.masks is not None:  # from the same spec as the pixels or cached latents: same crop, flip, size
            out["mask"] = self.masks(example, spec)
        if self.texts is not None:
            out.update(self.texts[spec.caption])
        else:
            out["input_ids"] = self.tokens(spec.caption)
        if self.time_ids:  # SDXL
            flipped_width = cover(example.size, spec.size)[0] if spec.flip and example.size else None
            out["time_ids"] = sample_time_ids(example.size, spec.crop, spec.size, flipped_width)
        return out

    def __getitem__(self, plan: BatchPlan) -> dict:
        samples, weights = [], []
        for k, (i, _) in enumerate(plan.pairs):
            ex = self.instances[i]
            samples.append(self.sample(ex, self.spec(ex, plan.size, sample_rng(self.seed, plan.epoch, plan.number, k))))
            weights.append(ex.loss_weight)
        n_instance = len(samples)
        for k, (_, j) in enumerate(plan.pairs):
            if j >= 0:
                ex = self.classes[j]
                rng = sample_rng(self.seed, plan.epoch, plan.number, 10_000 + k)
                samples.append(self.sample(ex, self.spec(ex, plan.size, rng)))
                weights.append(1.0)
        batch = {key: torch.stack([s[key] for s in samples]) for key in samples[0]}
        batch["is_prior"] = torch.arange(len(samples)) >= n_instance
        batch["loss_weight"] = torch.tensor(weights, dtype=torch.float32)
        batch["n_instance"] = n_instance
        batch["plan"] = (plan.epoch, plan.number)
        return batch


def cover(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The size an image of `size` is resized to so that it covers `box`."""
    _, _, scale = crop_box(size, box)
    return max(box[0], round(size[0] * scale)), max(box[1], round(size[1] * scale))


def center_crop_of(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    left, top, _ = crop_box(size, box, center=True)
    return left, top
