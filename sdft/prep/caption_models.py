"""Captioning models for `sdft data caption`, from the user's weights (a hub id when online, or a local folder).

- Sentence captioners through transformers' own classes (no remote code): BLIP (`model_type` blip), GIT (git) and
  Florence-2 in transformers' native format (florence2).
- WD14-style taggers through onnxruntime: a `.onnx` model (NHWC or NCHW, BGR 0..255 input, one sigmoid per tag) and
  its tags CSV (`selected_tags.csv`: tag_id,name,category,count; category 9 = rating, 4 = character, 0 = general).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sdft.errors import ConfigError, ModelLoadError

RATING, GENERAL, CHARACTER = 9, 0, 4
TAGS_CSV = "selected_tags.csv"
# Tags whose underscores are part of the tag (emoticons), kept as they are when underscores become spaces.
KAOMOJI = {
    "0_0",
    "(o)_(o)",
    "+_+",
    "+_-",
    "._.",
    "<o>_<o>",
    "<|>_<|>",
    "=_=",
    ">_<",
    "3_3",
    "6_9",
    ">_o",
    "@_@",
    "^_^",
    "o_o",
    "u_u",
    "x_x",
    "|_|",
    "||_||",
}


class TransformersCaptioner:
    """BLIP / GIT / Florence-2: one sentence per image (beam search, `max_new_tokens`)."""

    TASK = "<MORE_DETAILED_CAPTION>"  # Florence-2's caption task token (also <CAPTION>, <DETAILED_CAPTION>)

    def __init__(
        self, source: str, device: str = "cpu", max_new_tokens: int = 40, num_beams: int = 3, task: str | None = None
    ):
        import transformers

        classes = {
            "blip": transformers.BlipForConditionalGeneration,
            "git": transformers.GitForCausalLM,
            "florence2": getattr(transformers, "Florence2ForConditionalGeneration", None),
        }
        try:
            config = transformers.AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"--model {source}: no captioning model there ({err}). Give a local folder or a hub "
                "id (online), or a WD14 tagger folder / .onnx."
            ) from err
        self.kind = config.model_type
        if classes.get(self.kind) is None:
            raise ConfigError(
                f"--model {source}: a {self.kind!r} model; sdft captions with blip, git or florence2 "
                "(transformers' own classes) or a WD14 .onnx tagger."
            )
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(source)
            self.model = classes[self.kind].from_pretrained(source).to(device).eval()
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"--model {source}: cannot load its {self.kind} model or processor ({err}).") from err
        self.device, self.max_new_tokens, self.num_beams = device, max_new_tokens, num_beams
        self.task = task or (self.TASK if self.kind == "florence2" else None)
        self.name = f"{self.kind} {source}"

    def __call__(self, images: list[Image.Image]) -> list[str]:
        import torch

        text = [self.task] * len(images) if self.task else None
        inputs = self.processor(images=images, text=text, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams, do_sample=False
            )
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]


@dataclass(frozen=True)
class Tag:
    name: str
    category: int


def read_tags(path: Path) -> list[Tag]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "name" not in rows[0]:
        raise ConfigError(f"{path}: not a WD14 tags CSV (needs a header with name and category columns).")
    return [Tag(r["name"], int(r.get("category") or GENERAL)) for r in rows]


def pick_tags(
    probs: np.ndarray,
    tags: list[Tag],
    threshold: float = 0.35,
    character_threshold: float = 0.85,
    exclude: set[str] | None = None,
    max_tags: int | None = None,
) -> list[tuple[str, float]]:
    """Tags above their threshold, most confident first: character tags (own threshold) before general ones;
    ratings are dropped; underscores become spaces except in emoticons."""
    exclude = {e.strip().lower() for e in (exclude or set())}
    exclude |= {e.replace("_", " ") for e in exclude}
    chosen = []
    for tag, p in zip(tags, probs.tolist()):
        if tag.category == RATING:
            continue
        if p < (character_threshold if tag.category == CHARACTER else threshold):
            continue
        name = tag.name if tag.name in KAOMOJI else tag.name.replace("_", " ")
        if name.lower() in exclude or tag.name.lower() in exclude:
            continue
        chosen.append((name, p, tag.category == CHARACTER))
    chosen.sort(key=lambda t: (not t[2], -t[1]))
    return [(n, p) for n, p, _ in chosen[:max_tags]]


class OnnxTagger:
    """A WD14-style tagger: image padded to a white square, resized to the model's input, BGR 0..255."""

    def __init__(self, model: Path, tags_csv: Path, device: str = "cpu"):
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ConfigError(
                'WD14 taggers need onnxruntime: pip install onnxruntime (or: pip install -e ".[caption]").'
            ) from err
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]
        )
        try:
            self.session = ort.InferenceSession(str(model), providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types for unreadable models
            raise ModelLoadError(f"--model {model}: onnxruntime cannot load it ({err}).") from err
        self.tags = read_tags(tags_csv)
        inp = self.session.get_inputs()[0]
        self.input_name, shape = inp.name, inp.shape
        self.nchw = shape[1] == 3
        self.side = int(shape[2] if self.nchw else shape[1])
        outputs = self.session.get_outputs()[0].shape
        if isinstance(outputs[-1], int) and outputs[-1] != len(self.tags):
            raise ConfigError(f"--model {model}: it scores {outputs[-1]} tags but {tags_csv} lists {len(self.tags)}.")
        self.name = f"onnx tagger {model.name}"

    def preprocess(self, img: Image.Image) -> np.ndarray:
        side = max(img.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
        arr = np.asarray(square.resize((self.side, self.side), Image.Resampling.BICUBIC), dtype=np.float32)
        arr = arr[:, :, ::-1]  # RGB -> BGR, as the WD14 models were trained
        return np.ascontiguousarray(arr.transpose(2, 0, 1) if self.nchw else arr)

    def probabilities(self, images: list[Image.Image]) -> np.ndarray:
        batch = np.stack([self.preprocess(i) for i in images])
        return np.asarray(self.session.run(None, {self.input_name: batch})[0])


def tagger_files(source: str) -> tuple[Path, Path] | None:
    """(model.onnx, tags csv) when `source` is a tagger file or folder; None when it is something else."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == ".onnx":
        candidates = [path.with_suffix(".csv"), path.parent / TAGS_CSV]
        csv_path = next((c for c in candidates if c.is_file()), None)
        if csv_path is None:
            raise ConfigError(f"--model {source}: no tags CSV next to it ({TAGS_CSV} or {path.stem}.csv).")
        return path, csv_path
    if path.is_dir():
        models = sorted(path.glob("*.onnx"))
        if not models:
            return None
        if not (path / TAGS_CSV).is_file():
            raise ConfigError(f"--model {source}: {models[0].name} but no {TAGS_CSV} in the folder.")
        return (path / "model.onnx" if (path / "model.onnx").is_file() else models[0]), path / TAGS_CSV
    return None


def hub_tagger_files(source: str) -> tuple[Path, Path] | None:
    """A hub repo holding model.onnx + selected_tags.csv (e.g. SmilingWolf's WD taggers), when online."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import EntryNotFoundError

        return Path(hf_hub_download(source, "model.onnx")), Path(hf_hub_download(source, TAGS_CSV))
    except (EntryNotFoundError, ValueError):
        return None
    except Exception:  # offline, no such repo, ...: the transformers path gives the clear message
        return None


def load_captioner(source: str, kind: str = "auto", device: str = "cpu", **options):
    """A tagger (`tagger`) or a sentence captioner (`transformers`) for `source`; `auto` tells them apart by files."""
    if kind not in ("auto", "tagger", "transformers"):
        raise ConfigError(f"--kind {kind}: choose auto, tagger or transformers.")
    hub_id = source.count("/") == 1 and not source.startswith((".", "/", "~"))
    if not Path(source).expanduser().exists() and not hub_id:
        raise ConfigError(f"--model {source}: no such file or folder (and not a hub id like owner/name).")
    local = Path(source).expanduser().exists()
    files = tagger_files(source) if kind != "transformers" and local else None
    if files is None and kind == "tagger" and not local:
        files = hub_tagger_files(source)
    if files is None and kind == "tagger":
        raise ConfigError(f"--model {source}: no .onnx tagger with {TAGS_CSV} there.")
    if files is not None:
        return OnnxTagger(*files, device=device)
    try:
        return TransformersCaptioner(source, device, **options)
    except ModelLoadError:
        files = hub_tagger_files(source) if kind == "auto" and not local else None  # a tagger repo on the hub
        if files is None:
            raise
        return OnnxTagger(*files, device=device)
