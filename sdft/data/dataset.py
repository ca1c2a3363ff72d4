"""Instance + class (prior-preservation) samples, paired so every batch holds both kinds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from sdft.data.images import load_rgb, resize_crop, to_tensor


@dataclass(frozen=True)
class Example:
    path: Path
    prompt: str


class ImageTransform:
    """Load, resize/crop and optionally flip one image into a [-1, 1] tensor."""

    def __init__(self, resolution: int, center_crop: bool, random_flip: bool):
        self.resolution, self.center_crop, self.random_flip = resolution, center_crop, random_flip

    def __call__(self, path: Path) -> torch.Tensor:
        img = resize_crop(load_rgb(path), self.resolution, self.center_crop)
        pixels = to_tensor(img)
        if self.random_flip and torch.rand(()) < 0.5:
            pixels = pixels.flip(-1)
        return pixels


class DreamBoothDataset(Dataset):
    """Indexed by (instance index, class index or -1); returns pixels, token ids and whether it is a prior sample."""

    def __init__(self, instances: list[Example], classes: list[Example], transform: ImageTransform, tokenizer):
        self.instances, self.classes, self.transform, self.tokenizer = instances, classes, transform, tokenizer

    def __len__(self) -> int:
        return len(self.instances)

    def _tokens(self, prompt: str) -> torch.Tensor:
        return self.tokenizer(
            prompt, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length, return_tensors="pt"
        ).input_ids[0]

    def _sample(self, example: Example) -> dict:
        return {"pixel_values": self.transform(example.path), "input_ids": self._tokens(example.prompt)}

    def __getitem__(self, index: tuple[int, int]) -> dict:
        i, j = index
        item = {"instance": self._sample(self.instances[i])}
        if j >= 0:
            item["class"] = self._sample(self.classes[j])
        return item


class PairedSampler(Sampler):
    """Each epoch: every instance image `repeats` times in a shuffled order, each paired with the next class image.

    Class images cycle across epochs, so an epoch's length depends only on the instance images and repeats
    (class images never lengthen it). Deterministic for a seed; each new epoch reshuffles.
    """

    def __init__(self, num_instances: int, num_classes: int, repeats: int, seed: int, shuffle: bool = True):
        self.num_instances, self.num_classes, self.repeats = num_instances, num_classes, repeats
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0

    def __len__(self) -> int:
        return self.num_instances * self.repeats

    def __iter__(self) -> Iterator[tuple[int, int]]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.arange(len(self)) % self.num_instances
        if self.shuffle:
            order = order[torch.randperm(len(order), generator=gen)]
        class_order = torch.randperm(self.num_classes, generator=gen) if self.num_classes else None
        start = self.epoch * len(self)
        self.epoch += 1
        for k, i in enumerate(order.tolist()):
            j = int(class_order[(start + k) % self.num_classes]) if class_order is not None else -1
            yield i, j


def collate(items: list[dict]) -> dict:
    """Instance samples first, then class samples; `is_prior` marks the latter."""
    samples = [it["instance"] for it in items] + [it["class"] for it in items if "class" in it]
    n_instance = len(items)
    return {
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
        "input_ids": torch.stack([s["input_ids"] for s in samples]),
        "is_prior": torch.arange(len(samples)) >= n_instance,
    }
