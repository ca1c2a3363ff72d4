"""The LightningDataModule: instance images (+ captions) and class images, in paired batches."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from sdft.config import DataConfig
from sdft.data.captions import read_captions
from sdft.data.dataset import DreamBoothDataset, Example, ImageTransform, PairedSampler, collate
from sdft.data.images import collect_images

log = logging.getLogger(__name__)


def instance_examples(cfg: DataConfig) -> list[Example]:
    """Instance images with their prompts; raises DataError on a missing/empty/broken folder."""
    paths = collect_images(cfg.instance_dir, cfg.recursive, "data.instance_dir")
    prompts = read_captions(paths, cfg.instance_prompt, cfg.caption_extension, cfg.use_captions)
    return [Example(p, t) for p, t in zip(paths, prompts)]


class DreamBoothDataModule(L.LightningDataModule):
    """Batches of `batch_size` instance samples plus, with prior preservation, as many class samples."""

    def __init__(self, cfg: DataConfig, tokenizer, instances: list[Example], classes: list[Example], seed: int):
        super().__init__()
        self.cfg, self.tokenizer, self.seed = cfg, tokenizer, seed
        self.instances, self.classes = instances, classes
        self.dataset: DreamBoothDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        transform = ImageTransform(self.cfg.resolution, self.cfg.center_crop, self.cfg.random_flip)
        self.dataset = DreamBoothDataset(self.instances, self.classes, transform, self.tokenizer)

    def train_dataloader(self) -> DataLoader:
        sampler = PairedSampler(len(self.instances), len(self.classes), self.cfg.repeats, self.seed)
        return DataLoader(
            self.dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
            drop_last=False,
        )


def class_examples(paths: list[Path], prompt: str) -> list[Example]:
    return [Example(p, prompt) for p in paths]
