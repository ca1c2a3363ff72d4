"""What to render: `GenerationParams`, LoRAs as `PATH[:WEIGHT]`, the sampler names, a LoRA file from a path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image

from sdft.errors import ConfigError


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


def resolve_lora_file(path: str | Path) -> Path:
    """A LoRA .safetensors file, or the pytorch_lora_weights.safetensors in a run's lora/ folder."""
    from sdft.adapters.formats import LORA_WEIGHT_NAME  # lazy: `sdft --help` imports this module

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
    lora_dir: str | None = None  # where the prompt's `<lora:name:weight>` tags are looked up (default: outputs)


@dataclass
class GeneratedImage:
    image: Image.Image  # image.info["parameters"] holds the infotext too
    seed: int
    infotext: str
