"""`sdft generate`: txt2img / img2img with any base model and any number of LoRAs, sweeps into labelled grids.

`Generator` loads the base pipeline once; LoRAs (ours in diffusers format, or kohya/A1111 third-party files) are
checked to fit the base (`check_lora_fits`), loaded by diffusers as named adapters, cached by path and switched /
re-weighted with `set_adapters` without reloading the base. img2img reuses the same components.

Every PNG carries its generation parameters in the text chunk "parameters", as AUTOMATIC1111's `create_infotext`
writes them (modules/processing.py): `<prompt>\\nNegative prompt: <neg>\\nSteps: 20, Sampler: DPM++ 2M Karras,
CFG scale: 7.5, Seed: 1234, Size: 512x512, Model: <name>, Denoising strength: 0.6, Lora hashes: "a: 0123456789ab"`.
Values holding `,` `:` or a newline are JSON-quoted (A1111's infotext_utils.quote); a LoRA's hash is A1111's short
hash (first 12 hex digits of the sha256 of the safetensors file after its header, kohya's `sshs_model_hash`), its
name the file's stem; the LoRAs also appear as `<lora:name:weight>` at the end of the infotext's prompt (that is
how A1111 activates them, so pasting the infotext into A1111 reproduces the setup).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdft.config import TINY_MODEL, ModelConfig
from sdft.embeddings.files import split_bundle
from sdft.embeddings.inference import PipelineEmbeddings
from sdft.errors import ConfigError
from sdft.models.loading import load_pipeline

log = logging.getLogger(__name__)

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # what a run writes into <phase>/lora/
# our name -> (diffusers scheduler class, from_config overrides, A1111 sampler name)
SCHEDULERS: dict[str, tuple[str, dict, str]] = {
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "pndm": ("PNDMScheduler", {}, "PLMS"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, "DPM++ 2M"),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM++ 2M Karras",
    ),
    "lms": ("LMSDiscreteScheduler", {}, "LMS"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
}
DEFAULT_SCHEDULER = "dpmpp_2m_karras"


# ---------------------------------------------------------------------------------------------------- small parts


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA to apply: a .safetensors file (or a folder holding pytorch_lora_weights.safetensors) and its weight."""

    path: str
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "LoraSpec":
        """`PATH[:WEIGHT]`; a `:` followed by something that is not a number belongs to the path."""
        head, sep, tail = text.rpartition(":")
        if sep:
            try:
                return cls(head, float(tail))
            except ValueError:
                pass
        return cls(text, 1.0)


def parse_floats(text: str | float | Sequence[float], option: str) -> list[float]:
    """`7.5` or `5,7.5,10` -> floats (a comma list is a sweep)."""
    if isinstance(text, (int, float)):
        return [float(text)]
    if not isinstance(text, str):
        return [float(v) for v in text]
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option}={text!r}: expected a number or a comma-separated list of numbers.") from None
    if not values:
        raise ConfigError(f"{option}={text!r}: no value given.")
    return values


def quote(value) -> str:
    """A1111's infotext_utils.quote: JSON-quote values holding `,` `:` or a newline."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    import json

    return json.dumps(text, ensure_ascii=False)


def _num(value: float) -> str:
    return f"{float(value):g}" if float(value) != int(value) else str(float(value))


def create_infotext(
    *,
    prompt: str,
    negative_prompt: str,
    steps: int,
    sampler: str,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model: str | None,
    denoising_strength: float | None = None,
    loras: Sequence[tuple[str, float, str]] = (),
) -> str:
    """The A1111 infotext of one image; `loras` = (name, weight, short hash) in application order."""
    names = [(name.replace(":", "").replace(",", ""), weight, short) for name, weight, short in loras]
    prompt_text = prompt + "".join(f" <lora:{name}:{_num(w)}>" for name, w, _ in names)
    params = {
        "Steps": steps,
        "Sampler": sampler,
        "CFG scale": float(cfg_scale),
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model": model.replace(",", "").replace(":", "") if model else None,
        "Denoising strength": float(denoising_strength) if denoising_strength is not None else None,
        "Lora hashes": ", ".join(f"{name}: {short}" for name, _, short in names) or None,
    }
    text = ", ".join(f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt_text}{negative}\n{text}".strip()


def lora_short_hash(path: str | Path) -> str:
    """A1111's LoRA short hash: sha256 of a safetensors file after its header (kohya's addnet hash), 12 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
        f.seek(8 + header)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def resolve_lora_file(path: str | Path) -> Path:
    """A LoRA .safetensors file, or the pytorch_lora_weights.safetensors in a run's lora/ folder."""
    local = Path(path).expanduser()
    if local.is_dir():
        local = local / LORA_WEIGHT_NAME
    if not local.is_file():
        raise ConfigError(f"LoRA {path}: no such file (nor a folder holding {LORA_WEIGHT_NAME}).")
    if local.suffix.lower() != ".safetensors":
        raise ConfigError(
            f"LoRA {path}: only .safetensors LoRA files are read (pickle files such as .pt/.ckpt/.bin can run code "
            "when loaded). Convert it to safetensors first."
        )
    return local.resolve()


def lora_display_name(path: Path) -> str:
    """The name shown in infotexts: the file stem; for a run's lora/pytorch_lora_weights.safetensors, the phase."""
    if path.name == LORA_WEIGHT_NAME:
        parent = path.parent
        if parent.name == "lora" and parent.parent.name:
            return parent.parent.name
        return parent.name or path.stem
    return path.stem


def model_display_name(path: str) -> str:
    """A1111's `Model`: the checkpoint's name without extension (folder name, hub id, or `tiny`)."""
    if path == TINY_MODEL:
        return TINY_MODEL
    local = Path(path).expanduser()
    if local.is_file():
        return local.stem
    if local.is_dir():
        return local.resolve().name
    return path


def make_scheduler(name: str, base_config):
    """A diffusers scheduler for one of SCHEDULERS, built from the model's scheduler config."""
    if name not in SCHEDULERS:
        raise ConfigError(f"--scheduler {name!r}: unknown; choose one of {', '.join(SCHEDULERS)}.")
    class_name, overrides, _ = SCHEDULERS[name]
    import diffusers

    cls = getattr(diffusers, class_name)
    try:
        return cls.from_config(base_config, **overrides)
    except ImportError as err:  # diffusers' placeholder for a scheduler whose dependency is missing
        raise ConfigError(f"--scheduler {name}: {class_name} needs a package that is not installed: {err}") from err


# ---------------------------------------------------------------------------------------------------- the generator


@dataclass
class LoadedLora:
    path: Path
    adapter: str  # the adapter name in the pipeline
    name: str  # shown in infotexts
    short_hash: str
    parts: tuple[str, ...]  # "unet" / "text_encoder"
    tokens: tuple[str, ...] = ()  # embeddings it brought (bundled, or beside a pivotal run's LoRA): write these


@dataclass
class GenerationParams:
    """What to render; image i (over all batches) uses seed + i. `init_image` set = img2img with `strength`."""

    prompt: str
    negative_prompt: str = ""
    steps: int = 20
    guidance: float = 7.5
    scheduler: str = DEFAULT_SCHEDULER
    seed: int = -1  # -1: a random seed (then recorded)
    width: int | None = None  # default: the model's (txt2img) or the init image's size (img2img), multiple of 8
    height: int | None = None
    batch_size: int = 1
    batch_count: int = 1
    init_image: Image.Image | None = None
    strength: float = 0.75
    loras: list[LoraSpec] = field(default_factory=list)


@dataclass
class GeneratedImage:
    image: Image.Image  # image.info["parameters"] holds the infotext too
    seed: int
    infotext: str


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
        from sdft.models.family import pipeline_family, refuse_sdxl

        refuse_sdxl(pipeline_family(self.pipe), "Generation")  # LoRA loading and img2img are SD 1.x only so far
        self.pipe.to(self.device, self.dtype)
        self.pipe.set_progress_bar_config(disable=True)
        self.base_scheduler_config = self.pipe.scheduler.config
        self._img2img = None
        self._loras: dict[Path, LoadedLora] = {}
        self.active: list[tuple[LoadedLora, float]] = []
        self.embeddings = PipelineEmbeddings(self.pipe)  # textual-inversion tokens (files, LoRA bundles)

    # -- LoRAs --------------------------------------------------------------------------------------------------

    @property
    def loaded_loras(self) -> list[LoadedLora]:
        return list(self._loras.values())

    def load_lora(self, path: str | Path) -> LoadedLora:
        """Check that the file fits the base model, then load it as a new adapter (cached: once per path)."""
        file = resolve_lora_file(path)
        if file in self._loras:
            return self._loras[file]
        from sdft.adapters.kohya import LoraFormatError, check_lora_fits
        from sdft.adapters.lora_file import read_lora_file

        state, metadata = read_lora_file(file)
        state, bundled = split_bundle(state)  # a pivotal-tuning LoRA may carry its embedding (bundle_emb.*)
        from sdft.adapters.lycoris import file_kind

        if file_kind(state) is not None:  # LoHa / LoKr / DoRA / OFT: injected with peft (sdft/adapters/peft_files.py)
            return self._load_other_kind(file, state, metadata, file_kind(state), bundled)
        unet_sd, te_sd, _ = check_lora_fits(state, self.pipe.unet, self.pipe.text_encoder, metadata, source=str(file))
        expected = {
            "unet": {k.removesuffix(".lora_A.weight") for k in unet_sd if k.endswith(".lora_A.weight")},
            "text_encoder": {k.removesuffix(".lora_A.weight") for k in te_sd if k.endswith(".lora_A.weight")},
        }
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
        lora = LoadedLora(file, adapter, name, lora_short_hash(file), tuple(p for p, m in expected.items() if m),
                          tuple(tokens))
        self._loras[file] = lora
        log.info("Loaded LoRA %s as adapter %s (%s)", file, adapter, ", ".join(lora.parts))
        return lora

    def _load_other_kind(self, file: Path, state: dict, metadata: dict, kind: str, bundled: dict) -> LoadedLora:
        from sdft.adapters.peft_files import inject_file

        name = lora_display_name(file)
        adapter = self._adapter_name(name)
        models = {"unet": self.pipe.unet, "text_encoder": self.pipe.text_encoder}
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
        """An embedding file (A1111/ComfyUI or diffusers); returns the token to write in prompts."""
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
        """StableDiffusionImg2ImgPipeline over the same components (no reload, LoRAs shared)."""
        if self._img2img is None:
            from diffusers import StableDiffusionImg2ImgPipeline

            components = dict(self.pipe.components)
            components["requires_safety_checker"] = False
            self._img2img = StableDiffusionImg2ImgPipeline(**components)
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img

    def default_size(self) -> tuple[int, int]:
        side = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        return side, side

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
        pipe.scheduler = make_scheduler(params.scheduler, self.base_scheduler_config)
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

    def infotext(self, params: GenerationParams, seed: int, width: int, height: int) -> str:
        """The A1111 infotext of an image rendered from `params` with `seed` (LoRAs as currently active)."""
        return create_infotext(
            prompt=params.prompt, negative_prompt=params.negative_prompt, steps=params.steps,
            sampler=SCHEDULERS[params.scheduler][2], cfg_scale=params.guidance, seed=seed, width=width,
            height=height, model=self.model_name,
            denoising_strength=params.strength if params.init_image is not None else None,
            loras=[(lora.name, w, lora.short_hash) for lora, w in self.active],
        )

    def generate(self, params: GenerationParams, seeds: Sequence[int] | None = None) -> list[GeneratedImage]:
        """Render params.batch_count batches of params.batch_size PIL images (LoRAs: params.loras, set first)."""
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

        return np.concatenate([images for _, images in self._batches(params, seeds, "np")])


# ---------------------------------------------------------------------------------------------------- files, sweeps


def save_png(image: Image.Image, path: Path, infotext: str) -> Path:
    info = PngInfo()
    info.add_text("parameters", infotext)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, pnginfo=info)
    return path


def _next_index(out_dir: Path) -> int:
    """A1111-style numbering: one more than the highest NNNNN- prefix already in the folder."""
    numbers = [int(m.group(1)) for p in out_dir.glob("*.png") if (m := re.match(r"(\d+)-", p.name))]
    return max(numbers, default=-1) + 1


@dataclass
class RunResult:
    files: list[Path]
    grid: Path | None
    rows: list[str]  # grid row labels (sweep values)
    seeds: list[int]


def run_generation(
    gen: Generator,
    params: GenerationParams,
    out_dir: str | Path,
    *,
    guidance: Sequence[float] | None = None,
    strength: Sequence[float] | None = None,
    lora_weights: Sequence[float] | None = None,
) -> RunResult:
    """Render every combination of the sweep values (guidance x strength x last-LoRA weight) over the same seeds;
    write one PNG per image and, when anything is swept, one labelled grid (rows = combinations, columns = seeds)."""
    from sdft.callbacks.validation_grid import make_grid, tile_size

    out_dir = Path(out_dir)
    guidance = list(guidance or [params.guidance])
    strength = list(strength or [params.strength])
    lora_weights = list(lora_weights or [])
    if len(strength) > 1 and params.init_image is None:
        raise ConfigError("A --strength sweep needs --init-image (strength is img2img's denoising strength).")
    if lora_weights and not params.loras:
        raise ConfigError("--lora-weight-sweep needs at least one --lora (it re-weights the last one).")
    weights = lora_weights or [None]
    seeds = gen.seeds(params)
    index = _next_index(out_dir)
    files: list[Path] = []
    rows: list[list[Image.Image]] = []
    labels: list[str] = []
    swept = len(guidance) > 1 or len(strength) > 1 or len(lora_weights) > 1
    for cfg_scale, denoise, weight in itertools.product(guidance, strength, weights):
        loras = list(params.loras)
        if weight is not None:
            loras[-1] = replace(loras[-1], weight=weight)
        row_params = replace(params, guidance=cfg_scale, strength=denoise, loras=loras)
        images = gen.generate(row_params, seeds)
        for item in images:
            files.append(save_png(item.image, out_dir / f"{index:05d}-{item.seed}.png", item.infotext))
            index += 1
        rows.append([item.image for item in images])
        label = [f"CFG {_num(cfg_scale)}"] if len(guidance) > 1 else []
        label += [f"strength {_num(denoise)}"] if len(strength) > 1 else []
        if weight is not None:
            label.append(f"{lora_display_name(resolve_lora_file(loras[-1].path))}: {_num(weight)}")
        labels.append(", ".join(label) or params.prompt)
    grid_path = None
    if swept:
        width, height = rows[0][0].size
        grid = make_grid(rows, labels, seeds, tile_size(max(width, height)))
        grid_path = save_png(grid, out_dir / f"grid-{index:05d}.png", rows[0][0].info.get("parameters", ""))
    log.info("Wrote %d image(s) to %s%s", len(files), out_dir, f" and grid {grid_path}" if grid_path else "")
    return RunResult(files, grid_path, labels, seeds)
