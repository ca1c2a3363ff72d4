"""Aspect-ratio buckets and the batch plan (which samples form each batch, epoch by epoch).

Buckets (kohya's scheme): every (w, h) with both sides multiples of `step` in [min_reso, max_reso] and
w * h <= resolution², plus the square resolution. Sizes left null in the config follow the base model's native size
(`with_native_sizes`): SD 1.x 512 with limits 256..1024 (kohya's defaults), SDXL 1024 with 512..2048, which with
64-px steps is SDXL's usual bucket list (1024x1024, 1152x896, 1216x832, 1344x768, 1536x640, ... 512x2048). An image goes to the bucket whose aspect ratio is closest (in log
space) to its own; it is resized to cover the bucket and cropped. With `no_upscale`, an image smaller than
resolution² gets its own bucket: its size rounded down to the step. Without buckets, every image is a square.

Epoch: every instance image `repeats` times (its concept's repeats). Samples are grouped by bucket, shuffled within
it, cut into batches of `batch_size` instance samples (a bucket's last batch may be smaller), and the batches are
shuffled. With class images, each instance sample is paired with the next class image of its concept's class
(class images cycle across epochs and are cropped to the instance sample's bucket). Deterministic for a seed.
"""

from __future__ import annotations

import logging
import math
from typing import Iterator, NamedTuple

import torch
from torch.utils.data import Sampler

log = logging.getLogger(__name__)

Size = tuple[int, int]

SD1_NATIVE = 512  # SD 1.x's native size: what null sizes mean where no model is loaded (`sdft data check`, tests)


def native_resolution(pipe) -> int:
    """The base model's own training size: its U-Net's latent sample size times the VAE's downsampling factor
    (SD 1.x 64 x 8 = 512, SDXL 128 x 8 = 1024, the tiny models 64)."""
    sample = pipe.unet.config.sample_size
    sample = sample if isinstance(sample, int) else max(sample)
    return int(sample * pipe.vae_scale_factor)


def with_native_sizes(settings, native: int = SD1_NATIVE):
    """data.resolution / min_bucket_reso / max_bucket_reso left null -> the native size, half and twice it (in place;
    returns `settings`). Values set in the config (or a kohya TOML) are kept."""
    if settings.resolution is None:
        settings.resolution = native
    if settings.min_bucket_reso is None:
        settings.min_bucket_reso = native // 2
    if settings.max_bucket_reso is None:
        settings.max_bucket_reso = native * 2
    return settings


def make_buckets(resolution: int, min_reso: int = 256, max_reso: int = 1024, step: int = 64) -> list[Size]:
    if step <= 0 or min_reso > max_reso:
        raise ValueError(f"bad bucket settings: min {min_reso}, max {max_reso}, step {step}")
    max_area = resolution * resolution
    square = max(step, resolution // step * step)
    buckets = {(square, square)}
    w = max(step, math.ceil(min_reso / step) * step)
    while w <= max_reso:
        h = min(max_reso, (max_area // w) // step * step)
        if h >= min_reso:
            buckets.add((w, h))
            buckets.add((h, w))
        w += step
    return sorted(buckets)


def assign_bucket(size: Size, buckets: list[Size], resolution: int, step: int = 64, no_upscale: bool = False) -> Size:
    """The bucket (w, h) an image of `size` (upright) trains at."""
    w, h = size
    if no_upscale and w * h <= resolution * resolution:
        return max(step, w // step * step), max(step, h // step * step)
    aspect = math.log(w / h)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - aspect), -b[0] * b[1]))


def needs_upscale(size: Size, bucket: Size) -> bool:
    """True when covering the bucket enlarges the image."""
    return max(bucket[0] / size[0], bucket[1] / size[1]) > 1.0


def plan_buckets(sizes: list[Size], cfg, resolutions: list[int] | None = None) -> list[Size]:
    """One bucket per image for the data settings (enable_bucket, resolution, min/max, step, no_upscale).

    `resolutions`: each image's own training resolution (multi-resolution data), else cfg.resolution for all; each
    resolution has its own bucket list (area up to its square, the min/max/step of the config)."""
    resolutions = resolutions or [cfg.resolution] * len(sizes)
    if not cfg.enable_bucket:
        return [(r, r) for r in resolutions]
    lists: dict[int, list[Size]] = {}
    for r in set(resolutions):
        lists[r] = make_buckets(r, cfg.min_bucket_reso, cfg.max_bucket_reso, cfg.bucket_reso_steps)
    return [
        assign_bucket(s, lists[r], r, cfg.bucket_reso_steps, cfg.bucket_no_upscale) for s, r in zip(sizes, resolutions)
    ]


class BatchPlan(NamedTuple):
    """One batch: its epoch and number (they seed per-sample randomness), bucket and (instance, class or -1) pairs."""

    epoch: int
    number: int
    size: Size
    pairs: tuple[tuple[int, int], ...]


class BucketBatchSampler(Sampler):
    """Yields one BatchPlan per batch; see the module docstring for the epoch semantics.

    `pools[i]` lists the class-image indices instance i may be paired with (empty: no class images).
    Used as a DataLoader *sampler* with batch_size=None, so Lightning can shard the batches across DDP ranks.
    """

    def __init__(
        self,
        buckets: list[Size],
        repeats: list[int],
        pools: list[tuple[int, ...]],
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        resume=None,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.buckets, self.repeats, self.pools = buckets, repeats, pools
        self.batch_size, self.seed, self.shuffle, self.epoch = batch_size, seed, shuffle, 0
        self.resume = resume  # a sdft.callbacks.training_state.ResumePoint: skip what a resumed run already trained on
        counts: dict[Size, int] = {}
        for b, r in zip(buckets, repeats):
            counts[b] = counts.get(b, 0) + r
        self._len = sum(math.ceil(n / batch_size) for n in counts.values())
        self._pool_uses: dict[tuple[int, ...], int] = {}
        for pool, r in zip(pools, repeats):
            if pool:
                self._pool_uses[pool] = self._pool_uses.get(pool, 0) + r

    def __len__(self) -> int:
        return self._len

    def plan(self, epoch: int) -> list[BatchPlan]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        entries = [i for i, r in enumerate(self.repeats) for _ in range(r)]
        if self.shuffle:
            entries = [entries[k] for k in torch.randperm(len(entries), generator=gen).tolist()]
        by_bucket: dict[Size, list[int]] = {}
        for i in entries:
            by_bucket.setdefault(self.buckets[i], []).append(i)
        batches = [
            (size, items[k : k + self.batch_size])
            for size, items in sorted(by_bucket.items())
            for k in range(0, len(items), self.batch_size)
        ]
        if self.shuffle:
            batches = [batches[k] for k in torch.randperm(len(batches), generator=gen).tolist()]
        orders = {
            pool: (torch.randperm(len(pool), generator=gen).tolist() if self.shuffle else list(range(len(pool))))
            for pool in sorted(self._pool_uses)
        }
        used = {pool: epoch * n for pool, n in self._pool_uses.items()}  # class images continue across epochs
        plans = []
        for number, (size, items) in enumerate(batches):
            pairs = []
            for i in items:
                pool = self.pools[i]
                j = -1
                if pool:
                    j = pool[orders[pool][used[pool] % len(pool)]]
                    used[pool] += 1
                pairs.append((i, j))
            plans.append(BatchPlan(epoch, number, size, tuple(pairs)))
        return plans

    def __iter__(self) -> Iterator[BatchPlan]:
        done = self.resume.take() if self.resume is not None else None
        if done is None:
            plans = self.plan(self.epoch)
        else:  # the first epoch after a restore continues right after the last trained batch. The sampler counts its
            # epochs itself (no set_epoch): Lightning's epoch count can be one off after a restore at an epoch's end
            self.epoch = done[0]
            plans = [p for p in self.plan(self.epoch) if p.number > done[1]]
            if not plans:  # it was the epoch's last batch
                self.epoch += 1
                plans = self.plan(self.epoch)
        self.epoch += 1
        return iter(plans)
