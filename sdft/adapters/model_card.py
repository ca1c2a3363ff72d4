"""The model card (README.md) written beside a run's trained files, built with huggingface_hub's ModelCard.

It says what the Hub and a reader need: the base model, the trigger word and prompts to use it with, the final
validation grid (copied beside the card as grid.png), the settings that made it, each file's format and the tools
that load it, and a license field (`card.license`, else the base family's usual license). `sdft hub push` uploads the
folder as it is (sdft/cli/hub.py).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open

from sdft.atomic import write_text

log = logging.getLogger(__name__)

CARD_NAME = "README.md"
GRID_NAME = "grid.png"
# the license each family's base weights come with (users of other bases set card.license)
FAMILY_LICENSES = {"sd1": "creativeml-openrail-m", "sd2": "openrail++", "sdxl": "openrail++"}
# the run's output folders that hold the trained files, in the order looked for (sdft/callbacks/lora_checkpoint.py)
OUTPUT_FOLDERS = ("lora", "embedding", "model")
SETTINGS = (  # (label, config key) shown in the card's settings table
    ("adapter", "adapter.kind"),
    ("rank", "adapter.rank"),
    ("alpha", "adapter.alpha"),
    ("U-Net targets", "adapter.unet_targets"),
    ("text encoder trained", "adapter.train_text_encoder"),
    ("optimizer", "optim.optimizer._target_"),
    ("learning rate", "optim.lr"),
    ("resolution", "data.resolution"),
    ("batch size", "data.batch_size"),
    ("precision", "trainer.precision"),
    ("seed", "seed"),
)


def output_folder(phase_dir: Path) -> Path | None:
    """The phase's folder of trained files (lora/, embedding/ or model/), if it has one."""
    return next((phase_dir / n for n in OUTPUT_FOLDERS if (phase_dir / n).is_dir()), None)


def file_rows(folder: Path) -> list[tuple[str, str, str]]:
    """(file, format, tools that load it) for each weights file in `folder` (docs/formats.md)."""
    rows = []
    for path in sorted(folder.iterdir()):
        meta = safetensors_metadata(path) if path.suffix == ".safetensors" else {}
        if path.name == "pytorch_lora_weights.safetensors":
            rows.append((path.name, "diffusers / peft LoRA", "diffusers `pipe.load_lora_weights(folder)`, sdft"))
        elif path.name == "learned_embeds.safetensors":
            rows.append((path.name, "diffusers embedding", "diffusers `pipe.load_textual_inversion(file)`"))
        elif "ss_network_module" in meta:
            rows.append((path.name, "kohya LoRA", "AUTOMATIC1111 / Forge, ComfyUI, kohya sd-scripts, diffusers"))
        elif path.suffix == ".safetensors":
            rows.append((path.name, "A1111 embedding", "AUTOMATIC1111 / Forge and ComfyUI `embeddings/` folder"))
        elif path.name == "model_index.json":
            rows.append(("(this folder)", "diffusers pipeline", "diffusers `DiffusionPipeline.from_pretrained`"))
    return rows


def safetensors_metadata(path: Path) -> dict:
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception:  # not a readable safetensors file: listed without metadata
        return {}


def family_of(cfg: DictConfig, folder: Path) -> str | None:
    """sd1 / sdxl: the configured family, else what the kohya file says (ss_base_model_version)."""
    family = OmegaConf.select(cfg, "model.family")
    if family is not None:
        return str(getattr(family, "value", family))
    for path in folder.glob("*.safetensors"):
        version = safetensors_metadata(path).get("ss_base_model_version", "")
        if version:
            return "sdxl" if "xl" in version else "sd2" if "v2" in version else "sd1"
    return None


def is_hub_id(name: str) -> bool:
    """`owner/name` that is not a local path (the Hub validates base_model against its repos)."""
    return name.count("/") == 1 and not Path(name).expanduser().exists() and not name.startswith((".", "/", "~"))


def setting_rows(cfg: DictConfig, summary: dict) -> list[tuple[str, str]]:
    rows = [("steps", str(summary.get("steps")))]
    for label, key in SETTINGS:
        value = OmegaConf.select(cfg, key)
        if value is not None:
            value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            rows.append((label, str(getattr(value, "value", value))))
    return rows


def build_card(cfg: DictConfig, summary: dict, folder: Path, triggers: list[str], prompts: list[str]) -> ModelCard:
    """The card for the trained files in `folder` (a grid.png there is shown)."""
    base = str(OmegaConf.select(cfg, "model.path"))
    family = family_of(cfg, folder)
    license_ = OmegaConf.select(cfg, "card.license") or FAMILY_LICENSES.get(family or "", "other")
    embedding = summary.get("embedding")
    words = [w for w in [*triggers, embedding] if w]
    grid = (folder / GRID_NAME).is_file()
    data = ModelCardData(
        base_model=base if is_hub_id(base) else None,
        license=license_,
        library_name="diffusers",
        pipeline_tag="text-to-image",
        tags=["text-to-image", "stable-diffusion", "sdft", *(["lora"] if summary.get("adapter") != "full" else [])],
        instance_prompt=prompts[0] if prompts else None,
        widget=[{"text": prompts[0], "output": {"url": GRID_NAME}}] if grid and prompts else None,
    )
    name = summary.get("name", "sdft")
    shown = base if is_hub_id(base) else Path(base).name  # a local path is shown by its name only
    lines = [f"# {name}", "", f"`{summary.get('adapter')}` adapter trained with sdft on the base model `{shown}`.", ""]
    lines += ["## Trigger and prompts", ""]
    if words:
        lines += [f"Trigger: {', '.join(f'`{w}`' for w in words)}. Write it in the prompt, for example:", ""]
    else:
        lines += ["No separate trigger word is set: prompt it as it was trained and checked, for example:", ""]
    lines += [f"- `{p}`" for p in prompts] + [""]
    if grid:
        lines += ["## Final validation grid", "", "Rows: prompts; columns: seeds.", "", f"![grid]({GRID_NAME})", ""]
    lines += ["## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in setting_rows(cfg, summary)] + [""]
    lines += ["## Files", "", "| file | format | loads in |", "|---|---|---|"]
    lines += [f"| {f} | {fmt} | {tools} |" for f, fmt, tools in file_rows(folder)] + [""]
    lines += [f"License: `{license_}` (the card's `license` field; set `card.license` to change it).", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(lines))


def write_model_card(
    phase_dir: Path, cfg: DictConfig, summary: dict, concepts: list, prompts: list[str]
) -> Path | None:
    """README.md (and grid.png, the phase's last grid) in the phase's output folder; its path, or None without one."""
    folder = output_folder(phase_dir)
    if folder is None:
        return None
    grids = summary.get("grids") or []
    if grids and Path(grids[-1]).is_file():
        shutil.copyfile(grids[-1], folder / GRID_NAME)
    triggers = list(dict.fromkeys(c.trigger for c in concepts if c.trigger and not c.is_reg))
    card = build_card(cfg, summary, folder, triggers, prompts)
    write_text(folder / CARD_NAME, str(card))
    log.info("Model card: %s", folder / CARD_NAME)
    return folder / CARD_NAME
