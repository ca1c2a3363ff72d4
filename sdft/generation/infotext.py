"""AUTOMATIC1111's PNG metadata and LoRA names and hashes.

Every PNG carries its generation parameters in the text chunk "parameters", as AUTOMATIC1111's `create_infotext`
writes them (modules/processing.py): `<prompt>\\nNegative prompt: <neg>\\nSteps: 20, Sampler: DPM++ 2M Karras,
CFG scale: 7.5, Seed: 1234, Size: 512x512, Model: <name>, Denoising strength: 0.6, Lora hashes: "a: 0123456789ab"`.
Values holding `,` `:` or a newline are JSON-quoted (A1111's infotext_utils.quote); a LoRA's hash is A1111's short
hash (first 12 hex digits of the sha256 of the safetensors file after its header, kohya's `sshs_model_hash`), its
name the file's stem; the LoRAs also appear as `<lora:name:weight>` at the end of the infotext's prompt (that is
how A1111 activates them, so pasting the infotext into A1111 reproduces the setup).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdft.adapters.formats import LORA_WEIGHT_NAME
from sdft.adapters.hashes import tensors_sha256
from sdft.config import TINY_MODEL


def quote(value) -> str:
    """A1111's infotext_utils.quote: JSON-quote values holding `,` `:` or a newline."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    import json

    return json.dumps(text, ensure_ascii=False)


def short_number(value: float) -> str:
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
    prompt_text = prompt + "".join(f" <lora:{name}:{short_number(w)}>" for name, w, _ in names)
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
    return tensors_sha256(path)[:12]


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


def save_png(image: Image.Image, path: Path, infotext: str) -> Path:
    info = PngInfo()
    info.add_text("parameters", infotext)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, pnginfo=info)
    return path
