"""The LightningDataModule: concepts -> examples (+ report), buckets, caches, and the bucketed batch plan."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from sdft.config import DataConfig
from sdft.data.buckets import SD1_NATIVE, BucketBatchSampler, needs_upscale, plan_buckets, with_native_sizes
from sdft.data.cache_policy import encodes_in_run, latent_cache_wanted, latent_cache_worth_it, text_cache_wanted
from sdft.data.cache import LatentCache, default_cache_dir, fill_latent_cache, latent_key, text_cache, vae_identity
from sdft.data.captions import CaptionReport, ensure_trigger, read_captions_report
from sdft.data.dataset import BucketDataset, Example, ImageTransform, center_crop_of
from sdft.data.folders import Concept, class_dir_concepts, data_settings, require_images, resolve_concepts
from sdft.data.kohya_toml import KohyaDataset, load_kohya_toml
from sdft.data.images import (
    check_image,
    file_digest,
    handle_bad,
    list_ignored,
    list_images,
    no_images_error,
    report_duplicates,
    scan_images,
)
from sdft.errors import DataError
from sdft.models.params import text_towers

log = logging.getLogger(__name__)


@dataclass
class DatasetReport:
    """What `instance_examples` found: printed by `sdft data check`, logged at the start of training."""

    concepts: list[Concept] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)  # instance examples (good images only)
    reg_examples: list[Example] = field(default_factory=list)  # class images given as folders (kohya is_reg)
    bad: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    duplicates: list[list[Path]] = field(default_factory=list)
    captions: dict[str, CaptionReport] = field(default_factory=dict)
    total_files: int = 0
    settings: DictConfig | None = None  # the data config it was scanned with, a kohya TOML's settings merged in


def examples_of(concepts: list[Concept], settings, report: DatasetReport, what: str) -> list[Example]:
    out = []
    for c in concepts:
        paths = list_images(c.folder, c.recursive)
        report.ignored += list_ignored(c.folder, c.recursive)
        if not paths:
            raise no_images_error(c.folder, c.recursive, f"{what} ({c.name})")
        report.total_files += len(paths)
        scan = scan_images(paths)
        report.bad += scan.bad
        report.duplicates += scan.duplicates
        good = scan.good
        prompts, cap = read_captions_report(
            good, c.prompt, c.caption_extension, settings.use_captions, settings.missing_captions, c.captions.variants
        )
        report.captions[str(c.folder)] = cap
        if settings.ensure_trigger and c.trigger:
            prompts = [ensure_trigger(p, c.trigger) for p in prompts]
        out += [Example(p, t, c, scan.sizes[p]) for p, t in zip(good, prompts)]
    return out


def at_resolutions(examples: list[Example], resolutions) -> list[Example]:
    """Multi-resolution data (data.resolutions): each example whose concept has no resolution of its own, once per
    resolution (the images are scanned once; only the samples are repeated)."""
    if not resolutions:
        return examples
    out = []
    for ex in examples:
        if ex.concept is not None and ex.concept.resolution is not None:
            out.append(ex)
        else:
            out += [replace(ex, resolution=int(r)) for r in resolutions]
    return out


def resolution_counts(examples: list[Example], default: int) -> dict[int, int]:
    """Samples per training resolution (the data report's per-resolution line)."""
    counts: dict[int, int] = {}
    for ex in examples:
        r = ex.train_resolution(default)
        counts[r] = counts.get(r, 0) + 1
    return dict(sorted(counts.items()))


def scan_dataset(cfg: DataConfig, on_bad: str | None = None) -> DatasetReport:
    """Resolve the settings (reading a kohya TOML once), then `scan_settings`."""
    kohya = load_kohya_toml(cfg.kohya_toml) if cfg.kohya_toml else None
    return scan_settings(data_settings(cfg, kohya), kohya, on_bad)


def scan_settings(settings: DictConfig, kohya: KohyaDataset | None = None, on_bad: str | None = None) -> DatasetReport:
    """Resolve concepts, check every image, read captions. Bad images: error (listing all) or skip (warning).

    `settings`: resolved (sdft.data.folders.data_settings); `kohya`: its TOML, already read."""
    concepts = resolve_concepts(settings, kohya)
    require_images(concepts)
    if settings.class_dir and not settings.kohya_toml and not settings.concepts:
        class_dir = Path(settings.class_dir).expanduser()
        concepts += class_dir_concepts(class_dir, settings) if class_dir.is_dir() else []
    report = DatasetReport(concepts=concepts, settings=settings)
    report.examples = at_resolutions(
        examples_of([c for c in concepts if not c.is_reg], settings, report, "data"), settings.resolutions
    )
    report.reg_examples = examples_of([c for c in concepts if c.is_reg], settings, report, "class images")
    if on_bad != "report":
        handle_bad(report.bad, report.total_files, "data", on_bad or settings.on_bad_images)
    report_duplicates(report.duplicates, "data")
    if report.ignored:
        log.warning(
            "data: %d files that are not images were ignored: %s",
            len(report.ignored),
            ", ".join(str(p) for p in report.ignored[:20]),
        )
    if not report.examples:
        raise DataError("data: no readable instance images.")
    return report


def instance_examples(cfg: DataConfig) -> list[Example]:
    """Instance images with their prompts; raises DataError on a missing/empty folder or unreadable images."""
    return scan_dataset(cfg).examples


def training_settings(cfg: DataConfig | DictConfig, native: int = SD1_NATIVE) -> DictConfig:
    """Resolved settings with null sizes filled (the datamodule's input) for callers with no loaded model (tools,
    tests); a run fills them once from the loaded model (sdft/run/wiring.py)."""
    return with_native_sizes(data_settings(cfg), native)


def split_validation(examples: list[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held out): round(share * n) images, at least 1 when share > 0, chosen by a seeded permutation.

    Counted in image files: an image that trains at several resolutions (data.resolutions) is held out at all of them
    (its first sample is the one measured), so no held-out image is trained on."""
    if share <= 0:
        return examples, []
    if not share < 1:
        raise DataError(f"data.validation_split={share}: use a share in [0, 1), e.g. 0.2.")
    paths = list(dict.fromkeys(e.path for e in examples))
    held = max(1, round(share * len(paths)))
    if held >= len(paths):
        raise DataError(
            f"data.validation_split={share} would hold out all {len(paths)} instance images; "
            "add images or lower the split."
        )
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed)).tolist()
    out = {paths[i] for i in order[:held]}
    measured: dict[Path, Example] = {}  # each held-out image's first sample
    for e in examples:
        if e.path in out:
            measured.setdefault(e.path, e)
    return [e for e in examples if e.path not in out], list(measured.values())


def class_examples(paths: list[Path], prompt: str, concept: Concept | None = None) -> list[Example]:
    return [Example(p, prompt, concept) for p in paths]


def class_pools(instances: list[Example], classes: list[Example]) -> list[tuple[int, ...]]:
    """For each instance, the class images it is paired with: those of its class, else all of them."""
    everything = tuple(range(len(classes)))
    by_key: dict[str | None, list[int]] = {}
    for j, ex in enumerate(classes):
        by_key.setdefault(ex.class_key, []).append(j)
    return [tuple(by_key.get(ex.class_key, ())) if ex.class_key in by_key else everything for ex in instances]


class LatentLookup:
    """(example, spec) -> cached latent distribution; picklable for DataLoader workers."""

    def __init__(self, cache: LatentCache, digests: dict[Path, str], background, vae_id: str):
        self.cache, self.digests, self.background, self.vae_id = cache, digests, tuple(background), vae_id

    def key(self, example: Example, size, crop, flip) -> str:
        return latent_key(self.digests[example.path], size, crop, flip, self.background, self.vae_id)

    def __call__(self, example: Example, spec) -> torch.Tensor:
        return self.cache[self.key(example, spec.size, spec.crop, spec.flip)]


class DreamBoothDataModule(L.LightningDataModule):
    """Batches of up to `batch_size` instance samples of one bucket plus, with class images, as many class samples."""

    def __init__(
        self,
        settings: DictConfig,
        tokenizer,
        instances: list[Example],
        classes: list[Example],
        seed: int,
        resume=None,
        masks=None,
        time_ids: bool = False,
    ):
        super().__init__()
        self.time_ids = time_ids  # SDXL: batches carry per-sample size/crop time ids
        self.masks = masks  # loss masks (sdft/data/masks.py MaskTransform) when loss.masked_loss
        if None in (settings.resolution, settings.min_bucket_reso, settings.max_bucket_reso):
            raise ValueError("DreamBoothDataModule needs resolved sizes: PhaseData.settings or training_settings(cfg)")
        self.cfg, self.tokenizer, self.seed = settings, tokenizer, seed  # resolved once per phase, not copied
        self.resume = resume  # ResumePoint shared with the TrainingState callback (sdft/callbacks/training_state.py)
        self.instances = [ex if ex.size else _sized(ex) for ex in instances]
        self.classes = [ex if ex.size else _sized(ex) for ex in classes]
        self.buckets = plan_buckets(
            [ex.size for ex in self.instances],
            self.cfg,
            [ex.train_resolution(self.cfg.resolution) for ex in self.instances],
        )
        if len(self.resolution_counts()) > 1:
            log.info(
                "data: multi-resolution: %s",
                ", ".join(f"{n} images at {r} px" for r, n in self.resolution_counts().items()),
            )
        self.pools = class_pools(self.instances, self.classes)
        self.dataset: BucketDataset | None = None
        self.latents: LatentLookup | None = None
        self.texts: dict | None = None
        self._warn_upscale()

    def _warn_upscale(self) -> None:
        small = [ex.path for ex, b in zip(self.instances, self.buckets) if needs_upscale(ex.size, b)]
        if small:
            log.warning(
                "data: %d of %d images are smaller than their training size and will be upscaled "
                "(consider larger images, or data.bucket_no_upscale=true with buckets): %s",
                len(small),
                len(self.instances),
                ", ".join(str(p) for p in small[:10]) + (" ..." if len(small) > 10 else ""),
            )

    def resolution_counts(self) -> dict[int, int]:
        return resolution_counts(self.instances, self.cfg.resolution)

    def bucket_counts(self, resolution: int | None = None) -> dict[tuple[int, int], int]:
        """Images per bucket (only those training at `resolution`, when given)."""
        counts: dict = {}
        for ex, b in zip(self.instances, self.buckets):
            if resolution is None or ex.train_resolution(self.cfg.resolution) == resolution:
                counts[b] = counts.get(b, 0) + 1
        return dict(sorted(counts.items()))

    # -- caches --
    def build_caches(self, module, device: torch.device | str = "cpu", encodes: int | None = None) -> None:
        """Fill the latent / text-encoder caches the config asks for (or auto: where exact, sdft/data/cache_policy.py),
        with the module's own VAE and encode_text; `encodes`: images the run would encode without a cache."""
        cfg = self.cfg
        if latent_cache_wanted(cfg.cache_latents, cfg.center_crop):
            self.latents = self._latent_cache(module.vae, device, encodes)
        fixed = all(ex.caption_options.fixed_for(ex.prompt) for ex in self.instances + self.classes)
        needs_ids = None  # a reason the step needs the captions' token ids, not cached text states
        if getattr(getattr(module, "base_prior", None), "swap", None) is not None:
            needs_ids = "prior.base_prediction_captions swaps words in the captions' token ids"
        if text_cache_wanted(
            cfg.cache_text_encoder_outputs, getattr(module, "train_text_encoder", True), fixed, needs_ids
        ):
            ds = BucketDataset([], [], self.tokenizer, self.seed)
            towers = text_towers(module)
            original = next(towers[0].parameters()).device
            for tower in towers:
                tower.to(device)
            try:  # the family's own encoding (SD 1.x: hidden states; SDXL: both towers and the pooled embedding)
                self.texts = text_cache(
                    [ex.prompt for ex in self.instances + self.classes],
                    ds.tokens,
                    lambda ids: module.conditioning.encode(module, ids),
                    device,
                )
            finally:
                for tower in towers:
                    tower.to(original)

    def _latent_cache(self, vae, device, encodes: int | None = None) -> LatentLookup | None:
        cfg = self.cfg
        folder = None
        if cfg.cache_to_disk:
            folder = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
        cache = LatentCache(folder)
        examples = {ex.path: ex for ex in self.instances + self.classes}
        digests = {p: file_digest(p) for p in examples}
        lookup = LatentLookup(cache, digests, cfg.background, vae_identity(vae))
        transform = ImageTransform(tuple(cfg.background))
        jobs = {}

        def add(ex: Example, size) -> None:
            crop = center_crop_of(ex.size, size)
            for flip in (False, True) if ex.concept and ex.concept.flip else (False,):
                jobs[lookup.key(ex, size, crop, flip)] = lambda ex=ex, size=size, crop=crop, flip=flip: transform(
                    ex.path, size, crop, flip, ex.size
                )

        for i, ex in enumerate(self.instances):
            add(ex, self.buckets[i])
            for j in set(self.pools[i]):
                add(self.classes[j], self.buckets[i])
        if not latent_cache_worth_it(cfg.cache_latents, len(jobs), encodes):
            return None
        fill_latent_cache(cache, jobs, vae, device)
        return lookup

    # -- Lightning hooks --
    def setup(self, stage: str | None = None) -> None:
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is not None and (
            self.cfg.cache_latents is not False or self.cfg.cache_text_encoder_outputs is not False
        ):  # None: auto (sdft/data/cache_policy.py)
            encodes = encodes_in_run(self.trainer.max_steps, self.cfg.batch_size, bool(self.classes))
            self.build_caches(module, self.trainer.strategy.root_device, encodes)
        self.dataset = BucketDataset(
            self.instances,
            self.classes,
            self.tokenizer,
            self.seed,
            self.cfg.center_crop,
            tuple(self.cfg.background),
            self.latents,
            self.texts,
            self.masks,
            self.time_ids,
        )

    def sampler(self) -> BucketBatchSampler:
        return BucketBatchSampler(
            self.buckets,
            [ex.repeats * 1 for ex in self.instances],
            self.pools,
            self.cfg.batch_size,
            self.seed,
            resume=self.resume,
        )

    def train_dataloader(self) -> DataLoader:
        if self.dataset is None:
            self.setup("fit")
        return DataLoader(
            self.dataset,
            batch_size=None,  # the sampler yields whole batches (BatchPlan); Lightning can shard them across ranks
            sampler=self.sampler(),
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
            pin_memory=torch.cuda.is_available(),  # page-locked batches: asynchronous host-to-GPU copies
        )


def _sized(ex: Example) -> Example:
    size = check_image(ex.path)
    if isinstance(size, str):
        raise DataError(f"class image {ex.path} cannot be read: {size}")
    return replace(ex, size=size)
