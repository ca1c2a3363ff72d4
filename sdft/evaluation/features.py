"""Feature models for the DreamBooth metrics: CLIP (image and text embeddings) and a self-supervised ViT (DINO).

`eval.clip_model` / `eval.dino_model` name a hub id or a local folder (anything `from_pretrained` reads), `tiny`
(offline random models, sdft/evaluation/tiny_features.py) or `auto`: tiny for the offline test bases (`model=tiny`,
`model=toy`), else CLIP ViT-B/32 and DINO ViT-S/16, as in the DreamBooth paper. Images are preprocessed by the
model's own transformers image processor (its PIL backend: no torchvision). Every embedding is L2-normalised.
"""

from __future__ import annotations

import logging

import torch
from PIL import Image

from sdft.errors import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_MODELS = {"clip": "openai/clip-vit-base-patch32", "dino": "facebook/dino-vits16"}
OFFLINE_BASES = (
    "tiny",
    "toy",
    "sdxl_tiny",
)  # base models whose runs score with the tiny random feature models under `auto`
BATCH = 16


def resolve_feature_model(spec: str, kind: str, base_model: str | None = None, cache_dir: str | None = None) -> str:
    """The hub id or folder to load for `spec` (auto | tiny | hub id | folder)."""
    if spec == "auto":
        spec = "tiny" if base_model in OFFLINE_BASES else DEFAULT_MODELS[kind]
    if spec == "tiny":
        from sdft.evaluation.tiny_features import ensure_tiny_feature_model

        return str(ensure_tiny_feature_model(kind, cache_dir))
    return spec


def _load(loader, spec: str, option: str, local_files_only: bool, **kwargs):
    try:
        return loader.from_pretrained(spec, local_files_only=local_files_only, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"{option}={spec!r} could not be loaded: {err}\nUse a local folder (e.g. one saved by "
            f"`huggingface-cli download {DEFAULT_MODELS['clip' if 'clip' in option else 'dino']}`), go online once, "
            f"or {option}=tiny for the offline random model (plumbing checks only)."
        ) from err


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def _tensor(out) -> torch.Tensor:
    """transformers 5 returns an output object from get_*_features (its pooler_output), 4 a tensor."""
    return out if torch.is_tensor(out) else out.pooler_output


def in_batches(items: list, encode) -> torch.Tensor:
    """Normalised features of `items`, BATCH at a time (`encode(chunk)` -> features), on the CPU."""
    return torch.cat([_normalise(encode(items[i : i + BATCH])).cpu() for i in range(0, len(items), BATCH)])


class ClipScorer:
    """CLIP image and text embeddings (CLIP-I, CLIP-T)."""

    def __init__(self, spec: str, device: str | torch.device = "cpu", local_files_only: bool = False):
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        self.name, self.device = spec, torch.device(device)
        self.model = _load(CLIPModel, spec, "eval.clip_model", local_files_only).to(self.device).eval()
        self.processor = _load(AutoImageProcessor, spec, "eval.clip_model", local_files_only)
        self.tokenizer = _load(AutoTokenizer, spec, "eval.clip_model", local_files_only)

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt").pixel_values
        return pixels.to(self.device, self.model.dtype)

    @torch.no_grad()
    def images(self, images: list[Image.Image]) -> torch.Tensor:
        return in_batches(
            images, lambda chunk: _tensor(self.model.get_image_features(pixel_values=self._pixels(chunk)))
        )

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        def encode(chunk):
            tokens = self.tokenizer(
                list(chunk),
                padding=True,
                truncation=True,
                max_length=self.tokenizer.model_max_length,
                return_tensors="pt",
            ).to(self.device)
            return _tensor(self.model.get_text_features(**tokens))

        return in_batches(texts, encode)


class DinoScorer:
    """The CLS token of a self-supervised ViT (ViTModel for facebook/dino-vits16, Dinov2Model for DINOv2)."""

    def __init__(self, spec: str, device: str | torch.device = "cpu", local_files_only: bool = False):
        from transformers import AutoImageProcessor, AutoModel

        self.name, self.device = spec, torch.device(device)
        self.model = _load(AutoModel, spec, "eval.dino_model", local_files_only).to(self.device).eval()
        self.processor = _load(AutoImageProcessor, spec, "eval.dino_model", local_files_only)

    _pixels = ClipScorer._pixels  # the same image preprocessing through the model's own processor

    @torch.no_grad()
    def images(self, images: list[Image.Image]) -> torch.Tensor:
        return in_batches(images, lambda chunk: self.model(pixel_values=self._pixels(chunk)).last_hidden_state[:, 0])
