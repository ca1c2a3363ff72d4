"""`sdft eval`: generate the prompt set with each target (base or fine-tune + LoRAs) and score it.

One `Evaluator` holds what all targets share: the prompts, the real instance images and their features, the CLIP
and DINO scorers, and the base model's predictions for language drift. Targets on the same model share one loaded
`Generator` (LoRAs switched, base never reloaded). Each target writes `<out>/<label>/eval.json` and
`<out>/<label>/samples.png` (prompts x seeds) and `classes.png` (class-prompt images).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from omegaconf import OmegaConf
from PIL import Image

from sdft.config import EvalConfig, ModelConfig
from sdft.evaluation import metrics
from sdft.evaluation.cost import adapter_bytes, inference_cost, training_cost
from sdft.data.captions import subject_words
from sdft.evaluation.prompts import fill, prompt_templates, spread, without_identifier
from sdft.evaluation.targets import Target, base_target

log = logging.getLogger(__name__)

METRICS = ("dino", "clip_i", "clip_t", "pres", "div", "fidelity", "drift")


@dataclass
class TargetResult:
    target: Target
    row: dict
    images: list[list[Image.Image]] = field(default_factory=list)  # prompts x seeds


class Evaluator:
    """Shared state of one evaluation: settings, prompts, real images, feature scorers, drift references."""

    def __init__(self, eval_cfg, data_cfg, model_cfg, out_dir: str | Path, clip_skip: int = 1):
        from sdft.data.datamodule import instance_examples
        from sdft.data.images import load_rgb
        from sdft.evaluation.features import ClipScorer, DinoScorer, resolve_feature_model

        from sdft.config import DataConfig

        self.cfg = OmegaConf.merge(OmegaConf.structured(EvalConfig), eval_cfg)
        self.model_cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), model_cfg)
        data_cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), data_cfg)
        self.out = Path(out_dir)
        self.clip_skip = clip_skip
        self.resolution = self.cfg.resolution or data_cfg.resolution
        self.seeds = list(self.cfg.seeds)
        self.identifier, self.cls = subject_words(
            data_cfg.instance_prompt, data_cfg.class_prompt, data_cfg.trigger, self.cfg.identifier, self.cfg.class_noun
        )
        templates = spread(prompt_templates(self.cfg.prompts), self.cfg.num_prompts)
        self.prompts = [fill(t, self.identifier, self.cls) for t in templates]
        self.class_prompt = data_cfg.class_prompt or f"a {self.cls}"
        plain = [without_identifier(p, self.identifier) for p in self.prompts]
        self.text_prompts = plain  # CLIP-T scores the prompt without the rare token, which CLIP does not know
        n_drift = max(self.cfg.drift_prompts - 1, 0)
        self.drift_prompts = [self.class_prompt] + (spread(plain, n_drift) if n_drift else [])
        self.instances = instance_examples(data_cfg)
        self.real = [load_rgb(e.path) for e in self.instances]
        device = self.cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = device
        offline = bool(self.model_cfg.local_files_only)
        cache = self.model_cfg.cache_dir
        self.clip = ClipScorer(
            resolve_feature_model(self.cfg.clip_model, "clip", self.model_cfg.path, cache), device, offline
        )
        self.dino = DinoScorer(
            resolve_feature_model(self.cfg.dino_model, "dino", self.model_cfg.path, cache), device, offline
        )
        self.real_clip, self.real_dino = self.clip.images(self.real), self.dino.images(self.real)
        self._generator = None
        self._references: dict[str, torch.Tensor] = {}

    # -- models ------------------------------------------------------------------------------------------------

    def generator(self, model: str):
        """A Generator for `model` (the run's base config, or a fine-tuned folder); the previous one is dropped."""
        from sdft.generation.generator import Generator

        if self._generator is not None and self._generator.model_config.path == model:
            return self._generator
        self._generator = None
        cfg = (
            self.model_cfg
            if model == self.model_cfg.path
            else OmegaConf.merge(self.model_cfg, {"path": model, "vae": None, "config": None})
        )
        self._generator = Generator(OmegaConf.to_object(cfg), device=self.device)
        if self.resolution is None:  # data.resolution null: the base model's native size, as training used
            from sdft.data.buckets import native_resolution

            self.resolution = native_resolution(self._generator.pipe)
        return self._generator

    def noise_scheduler(self, gen) -> DDPMScheduler:
        return DDPMScheduler.from_config(gen.base_scheduler_config)

    def reference(self, base_model: str) -> torch.Tensor:
        """The base model's predictions on the drift prompts (computed once per base)."""
        if base_model not in self._references:
            gen = self.generator(base_model)
            gen.set_loras([])
            self._references[base_model] = metrics.eps_predictions(
                gen.pipe, self.noise_scheduler(gen), self.drift_prompts, self.resolution, clip_skip=self.clip_skip
            )
        return self._references[base_model]

    # -- one target --------------------------------------------------------------------------------------------

    def params(self, prompt: str, loras: list[str]):
        from sdft.generation.params import GenerationParams, LoraSpec

        return GenerationParams(
            prompt=prompt,
            steps=self.cfg.steps,
            guidance=self.cfg.guidance,
            scheduler=self.cfg.scheduler,
            width=self.resolution,
            height=self.resolution,
            batch_size=len(self.seeds),
            loras=[LoraSpec(f) for f in loras],
        )

    def render(self, gen, prompt: str, loras: list[str], seeds: list[int]) -> list[Image.Image]:
        from dataclasses import replace

        params = replace(self.params(prompt, loras), batch_size=min(len(seeds), 8))
        return [item.image for item in gen.generate(params, seeds)]

    def evaluate(self, target: Target) -> TargetResult:
        log.info("Evaluating %s: %s + %s", target.label, target.model, target.loras or "no LoRA")
        reference = self.reference(target.base_model or target.model)
        gen = self.generator(target.model)
        if gen.embeddings.sources:  # an earlier target's embedding tokens must not leak into this one: fresh base
            self._generator = None
            gen = self.generator(target.model)
        for file in target.embeddings:
            gen.load_embedding(file)
        images = [self.render(gen, p, target.loras, self.seeds) for p in self.prompts]
        classes = self.render(gen, self.class_prompt, target.loras, list(range(self.cfg.class_images)))
        flat = [im for row in images for im in row]
        gen_dino, gen_clip = self.dino.images(flat), self.clip.images(flat)
        texts = self.clip.texts([t for t in self.text_prompts for _ in self.seeds])
        class_dino = self.dino.images(classes)
        row = {
            "label": target.label,
            "kind": target.kind,
            "dino": metrics.mean_similarity(gen_dino, self.real_dino),
            "clip_i": metrics.mean_similarity(gen_clip, self.real_clip),
            "clip_t": metrics.clip_t(gen_clip, texts),
            "pres": metrics.mean_similarity(class_dino, self.real_dino),
            "div": metrics.diversity([class_dino]),
        }
        gen.set_loras(self.params("", target.loras).loras)  # fidelity and drift with the target's LoRAs active
        scheduler = self.noise_scheduler(gen)
        row["fidelity"] = metrics.instance_fidelity(
            gen.pipe, scheduler, self.instances, gen.pipe.tokenizer, self.resolution, clip_skip=self.clip_skip
        )
        tuned = metrics.eps_predictions(
            gen.pipe, scheduler, self.drift_prompts, self.resolution, clip_skip=self.clip_skip
        )
        row["drift"] = metrics.language_drift(tuned, reference)
        size = adapter_bytes(target)
        row["adapter_mb"] = round(size / 2**20, 3) if size is not None else None
        row.update(training_cost(target))
        row.update(inference_cost(gen, self.params(self.prompts[0], target.loras), self.cfg.timing_images))
        self.write(target, row, images, classes)
        return TargetResult(target, row, images)

    def real_row(self) -> dict:
        """The paper's 'real images' row: real instance images against each other (an upper bound)."""
        return {
            "label": "real images",
            "kind": "real",
            "dino": metrics.mean_self_similarity(self.real_dino),
            "clip_i": metrics.mean_self_similarity(self.real_clip),
        }

    def write(self, target: Target, row: dict, images, classes) -> None:
        from sdft.images_grid import make_grid, tile_size

        folder = self.out / target.label
        folder.mkdir(parents=True, exist_ok=True)
        info = {
            "row": row,
            "model": target.model,
            "loras": target.loras,
            "prompts": self.prompts,
            "class_prompt": self.class_prompt,
            "drift_prompts": self.drift_prompts,
            "seeds": self.seeds,
            "settings": OmegaConf.to_container(self.cfg),
            "clip_model": self.clip.name,
            "dino_model": self.dino.name,
        }
        (folder / "eval.json").write_text(json.dumps(info, indent=2, default=str))
        tile = tile_size(self.resolution)
        make_grid(images, self.prompts, self.seeds, tile).save(folder / "samples.png")
        make_grid([classes], [self.class_prompt], list(range(len(classes))), tile).save(folder / "classes.png")


def evaluate_targets(
    targets: list[Target], run_cfg, out_dir: str | Path, with_base: bool = False, eval_overrides: dict | None = None
) -> tuple[list[dict], list[TargetResult], Evaluator]:
    """Score each target (plus the untouched base and the real images when `with_base`); rows in order."""
    eval_cfg = OmegaConf.merge(OmegaConf.structured(EvalConfig), run_cfg.get("eval", {}), eval_overrides or {})
    evaluator = Evaluator(eval_cfg, run_cfg.data, run_cfg.model, out_dir, run_cfg.model.get("clip_skip", 1))
    if with_base:
        targets = [base_target(run_cfg.model.path)] + list(targets)
    results = [evaluator.evaluate(t) for t in sorted(targets, key=lambda t: t.model != run_cfg.model.path)]
    order = {id(t): i for i, t in enumerate(targets)}
    results.sort(key=lambda r: order[id(r.target)])
    rows = ([evaluator.real_row()] if with_base else []) + [r.row for r in results]
    return rows, results, evaluator
