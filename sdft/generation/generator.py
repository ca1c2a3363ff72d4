"""`Generator`: the base pipeline loaded once; LoRAs (ours in diffusers format, or kohya/A1111 third-party files)
checked to fit the base (`check_lora_fits`), loaded by diffusers as named adapters, cached by path and switched /
re-weighted with `set_adapters` without reloading the base; img2img reuses the same components."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from sdft.config import TINY_MODEL, ModelConfig
from sdft.embeddings.files import split_bundle
from sdft.embeddings.inference import PipelineEmbeddings
from sdft.errors import ConfigError
from sdft.generation.infotext import create_infotext, lora_display_name, lora_short_hash, model_display_name
from sdft.generation.params import (
    SCHEDULERS,
    GeneratedImage,
    GenerationParams,
    LoraSpec,
    make_scheduler,
    resolve_lora_file,
)
from sdft.generation.prompt_loras import with_prompt_loras
from sdft.families.load import load_pipeline

log = logging.getLogger(__name__)


@dataclass
class LoadedLora:
    path: Path
    adapter: str  # the adapter name in the pipeline
    name: str  # shown in infotexts
    short_hash: str
    parts: tuple[str, ...]  # "unet" / "text_encoder"
    tokens: tuple[str, ...] = ()  # embeddings it brought (bundled, or beside a pivotal run's LoRA): write these


class Generator:
    """The base pipeline, loaded once; LoRAs are loaded on demand, cached by path, switched by weight.

    `set_loras([...])` activates exactly the given LoRAs at their weights (others stay loaded but inactive);
    `unload_lora(path)` / `unload_all()` free them. `generate(params)` renders txt2img or img2img.
    """

    def __init__(
        self,
        model: str | ModelConfig = TINY_MODEL,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **model_options,
    ):
        cfg = model if isinstance(model, ModelConfig) else ModelConfig(path=model, **model_options)
        self.model_config = cfg
        self.model_name = model_display_name(cfg.path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.pipe = load_pipeline(cfg)
        from sdft.families import family_of

        self.family = family_of(self.pipe)
        self.pipe.to(self.device, self.dtype)
        self.pipe.set_progress_bar_config(disable=True)
        self.base_scheduler_config = self.pipe.scheduler.config
        self._img2img = None
        self._loras: dict[Path, LoadedLora] = {}
        self.active: list[tuple[LoadedLora, float]] = []
        # textual-inversion tokens (files, LoRA bundles; SDXL: both towers' vectors)
        self.embeddings = PipelineEmbeddings(self.pipe)

    # -- LoRAs --------------------------------------------------------------------------------------------------

    @property
    def loaded_loras(self) -> list[LoadedLora]:
        return list(self._loras.values())

    def load_lora(self, path: str | Path) -> LoadedLora:
        """Check that the file fits the base model, then load it as a new adapter (cached: once per path)."""
        file = resolve_lora_file(path)
        if file in self._loras:
            return self._loras[file]
        from sdft.adapters.fit import lora_fit
        from sdft.adapters.kohya import LoraFormatError
        from sdft.adapters.lora_file import read_lora_file

        state, metadata = read_lora_file(file)
        state, bundled = split_bundle(state)  # a pivotal-tuning LoRA may carry its embedding (bundle_emb.*)
        from sdft.adapters.lycoris import file_kind

        if file_kind(state) is not None:  # LoHa / LoKr / DoRA / OFT: injected with peft (sdft/adapters/peft_files.py)
            return self._load_other_kind(file, state, metadata, file_kind(state), bundled)
        expected = lora_fit(state, self.pipe, metadata, str(file))  # every part's modules, checked first
        name = lora_display_name(file)
        adapter = self._adapter_name(name)
        try:
            self.pipe.load_lora_weights(state if bundled else str(file), adapter_name=adapter)
        except (ValueError, KeyError, RuntimeError) as err:
            self._drop_adapter(adapter)
            raise LoraFormatError(f"LoRA {file}: diffusers could not load it: {err}") from err
        # never a silent no-op: every module the file holds must now carry the adapter
        missing = []
        for part, modules in expected.items():
            model = getattr(self.pipe, part)
            have = {n for n, m in model.named_modules() if adapter in getattr(m, "lora_A", {})}
            missing += [f"{part}.{m}" for m in sorted(modules - have)]
        if missing:
            self._drop_adapter(adapter)
            raise LoraFormatError(
                f"LoRA {file}: {len(missing)} module(s) were not loaded by diffusers: {', '.join(missing[:10])}"
            )
        tokens = self.embeddings.from_lora(file, bundled)
        self.pipe.to(self.device, self.dtype)
        lora = LoadedLora(
            file, adapter, name, lora_short_hash(file), tuple(p for p, m in expected.items() if m), tuple(tokens)
        )
        self._loras[file] = lora
        log.info("Loaded LoRA %s as adapter %s (%s)", file, adapter, ", ".join(lora.parts))
        return lora

    def _load_other_kind(self, file: Path, state: dict, metadata: dict, kind: str, bundled: dict) -> LoadedLora:
        from sdft.adapters.peft_files import inject_file

        name = lora_display_name(file)
        adapter = self._adapter_name(name)
        models = {part: getattr(self.pipe, part) for part in ("unet", *self.family.text_parts)}
        try:
            parts = inject_file(models, state, metadata, kind, adapter, str(file))
        except Exception:
            self._drop_adapter(adapter)
            raise
        tokens = self.embeddings.from_lora(file, bundled)
        self.pipe.to(self.device, self.dtype)
        lora = LoadedLora(file, adapter, name, lora_short_hash(file), parts, tuple(tokens))
        self._loras[file] = lora
        log.info("Loaded %s adapter %s as %s (%s)", kind, file, adapter, ", ".join(parts))
        return lora

    def load_embedding(self, path: str | Path) -> str:
        """An embedding file (A1111/ComfyUI or diffusers; SDXL: clip_l + clip_g); returns the token to write."""
        token = self.embeddings.load_file(path)
        self.pipe.to(self.device, self.dtype)
        return token

    def set_loras(self, specs: Sequence[LoraSpec | str]) -> None:
        """Activate exactly these LoRAs at their weights; loads new ones, never reloads the base."""
        specs = [LoraSpec.parse(s) if isinstance(s, str) else s for s in specs]
        loras = [self.load_lora(s.path) for s in specs]
        seen: set[Path] = set()
        for lora in loras:
            if lora.path in seen:
                raise ConfigError(f"LoRA {lora.path} is listed twice; give it once with the summed weight.")
            seen.add(lora.path)
        self.active = [(lora, float(s.weight)) for lora, s in zip(loras, specs)]
        if not self._loras:
            return
        if not loras:
            self.pipe.disable_lora()
            return
        self.pipe.enable_lora()
        self.pipe.set_adapters([lora.adapter for lora in loras], adapter_weights=[float(s.weight) for s in specs])

    def unload_lora(self, path: str | Path) -> None:
        file = resolve_lora_file(path)
        lora = self._loras.pop(file, None)
        if lora is None:
            return
        self.active = [(a, w) for a, w in self.active if a.path != file]
        self._drop_adapter(lora.adapter)
        self.set_loras([LoraSpec(str(a.path), w) for a, w in self.active])

    def unload_all(self) -> None:
        for lora in list(self._loras.values()):
            self._drop_adapter(lora.adapter)
        self._loras.clear()
        self.active = []

    def _adapter_name(self, name: str) -> str:
        base = re.sub(r"\W", "_", name) or "lora"
        taken = {lora.adapter for lora in self._loras.values()}
        candidate, i = base, 1
        while candidate in taken:
            i += 1
            candidate = f"{base}_{i}"
        return candidate

    def _drop_adapter(self, adapter: str) -> None:
        listed = self.pipe.get_list_adapters()
        if any(adapter in names for names in listed.values()):
            self.pipe.delete_adapters(adapter)

    # -- rendering ----------------------------------------------------------------------------------------------

    @property
    def img2img_pipe(self):
        """The family's img2img pipeline over the same components (no reload, LoRAs shared)."""
        if self._img2img is None:
            from sdft.families import img2img_pipeline

            self._img2img = img2img_pipeline(self.pipe)
        return self._img2img

    def default_guidance(self) -> float:
        """The CFG scale to sample this base at when none is given: SD's 7.5 (A1111's default), the toy's 3.0 (its
        model card's; at 7.5 its 32 px images come out garbled)."""
        if str(self.model_config.path) == "toy":
            from sdft.toy.control import GUIDANCE

            return GUIDANCE
        return GenerationParams.guidance

    def default_size(self) -> tuple[int, int]:
        side = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        return side, side

    def size_range(self) -> tuple[int, int, int]:
        """(minimum, maximum, step) of a sensible width/height for this model: from an eighth to four times its
        native size, in multiples of 8 (SD 1.5: 64-2048 as in A1111; SDXL: 128-4096; the 32 px toy: 8-128)."""
        native = max(self.default_size())
        return max(8, native // 8 // 8 * 8), native * 4, 8

    def seeds(self, params: GenerationParams) -> list[int]:
        seed = params.seed
        if seed is None or seed < 0:
            seed = int(torch.randint(0, 2**32 - 1, ()).item())
        return [seed + i for i in range(params.batch_size * params.batch_count)]

    def _check(self, params: GenerationParams) -> tuple[int, int]:
        if params.steps < 1 or params.batch_size < 1 or params.batch_count < 1:
            raise ConfigError("--steps, --batch-size and --batch-count must be >= 1.")
        width, height = params.width, params.height
        if params.init_image is not None:
            if not 0.0 < params.strength <= 1.0:
                raise ConfigError(f"--strength {params.strength}: must be in (0, 1].")
            if int(params.steps * params.strength) < 1:
                raise ConfigError(
                    f"img2img runs int(steps * strength) denoising steps: {params.steps} * {params.strength} < 1. "
                    "Raise --steps or --strength."
                )
            width = width or params.init_image.width // 8 * 8
            height = height or params.init_image.height // 8 * 8
        default_w, default_h = self.default_size()
        width, height = width or default_w, height or default_h
        if width % 8 or height % 8 or width < 8 or height < 8:
            raise ConfigError(f"--width/--height {width}x{height}: must be positive multiples of 8.")
        return width, height

    @torch.no_grad()
    def _batches(self, params: GenerationParams, seeds: Sequence[int] | None, output_type: str):
        """Yield (seeds, images) per batch, with the LoRAs and scheduler of `params` set."""
        width, height = self._check(params)
        self.set_loras(params.loras)
        seeds = list(seeds) if seeds is not None else self.seeds(params)
        img2img = params.init_image is not None
        pipe = self.img2img_pipe if img2img else self.pipe
        pipe.scheduler = self.sampling_scheduler(params)
        self._used_scheduler = type(pipe.scheduler).__name__
        init = params.init_image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS) if img2img else None
        for start in range(0, len(seeds), params.batch_size):
            batch = seeds[start : start + params.batch_size]
            kwargs = dict(
                prompt=[params.prompt] * len(batch),
                negative_prompt=[params.negative_prompt] * len(batch) if params.negative_prompt else None,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance,
                generator=[torch.Generator("cpu").manual_seed(s) for s in batch],
                output_type=output_type,
            )
            if img2img:
                images = pipe(image=[init] * len(batch), strength=params.strength, **kwargs).images
            else:
                images = pipe(height=height, width=width, **kwargs).images
            yield batch, images

    def sampling_scheduler(self, params: GenerationParams):
        """params.scheduler, unless an active LoRA was trained with loss.zero_terminal_snr: then the zero-SNR DDIM
        (trailing, its prediction type) it was trained and validated with (sdft/training/noise.py), whatever was asked."""
        from sdft.generation.lora_scheduler import sampling_scheduler

        scheduler = make_scheduler(params.scheduler, self.base_scheduler_config)
        for lora, _ in self.active:
            chosen = sampling_scheduler(scheduler, lora.path)
            if chosen is not scheduler:
                log.warning(
                    "LoRA %s was trained with zero terminal SNR: sampling with its zero-SNR DDIM, not %s.",
                    lora.path.name,
                    params.scheduler,
                )
                scheduler = chosen
        return scheduler

    def infotext(self, params: GenerationParams, seed: int, width: int, height: int) -> str:
        """The A1111 infotext of an image rendered from `params` with `seed` (LoRAs as currently active)."""
        return create_infotext(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            steps=params.steps,
            sampler=self._sampler_name(params),
            cfg_scale=params.guidance,
            seed=seed,
            width=width,
            height=height,
            model=self.model_name,
            denoising_strength=params.strength if params.init_image is not None else None,
            loras=[(lora.name, w, lora.short_hash) for lora, w in self.active],
        )

    def _sampler_name(self, params: GenerationParams) -> str:
        """A1111's sampler name of what rendered the image (DDIM when a zero-SNR LoRA chose it)."""
        wanted = SCHEDULERS[params.scheduler]
        return wanted[2] if getattr(self, "_used_scheduler", wanted[0]) == wanted[0] else "DDIM"

    def generate(self, params: GenerationParams, seeds: Sequence[int] | None = None) -> list[GeneratedImage]:
        """Render params.batch_count batches of params.batch_size PIL images (LoRAs: params.loras and the prompt's
        `<lora:name:weight>` tags, set first)."""
        params = with_prompt_loras(params)
        out: list[GeneratedImage] = []
        for batch, images in self._batches(params, seeds, "pil"):
            for seed, image in zip(batch, images):
                text = self.infotext(params, seed, image.width, image.height)
                image.info["parameters"] = text
                out.append(GeneratedImage(image, seed, text))
        return out

    def render(self, params: GenerationParams, seeds: Sequence[int] | None = None):
        """Like `generate`, as one float numpy array (N, H, W, 3) in [0, 1] (for comparisons)."""
        import numpy as np

        params = with_prompt_loras(params)
        return np.concatenate([images for _, images in self._batches(params, seeds, "np")])
