"""`sdft data caption DIR --model M`: write a caption file next to each image, from a BLIP / GIT / Florence-2 model
(transformers) or a WD14-style tagger (.onnx + tags CSV, onnxruntime), with the trigger word inserted first.

Existing non-empty captions are kept unless --overwrite. Masks (`<stem>.mask.png`) are not images to caption.
"""

from __future__ import annotations

from pathlib import Path

from sdft.atomic import write_text
from sdft.data.captions import caption_path, ensure_trigger, normalize_extension
from sdft.data.images import check_folder, list_images, load_rgb, no_images_error, scan_images


def tags_text(tags: list[tuple[str, float]]) -> str:
    return ", ".join(name for name, _ in tags)


def caption_folder(
    folder: str | Path,
    captioner,
    trigger: str | None = None,
    extension: str = ".txt",
    overwrite: bool = False,
    recursive: bool = True,
    batch_size: int = 4,
    threshold: float = 0.35,
    character_threshold: float = 0.85,
    exclude_tags: set[str] | None = None,
    max_tags: int | None = None,
) -> dict[str, list[str]]:
    """Caption every image of `folder`; returns {"written": [...], "kept": [...], "unreadable": [...]} (paths)."""
    from sdft.prep.caption_models import OnnxTagger, pick_tags

    folder = check_folder(folder, "sdft data caption")
    extension = normalize_extension(extension)
    paths = list_images(folder, recursive)
    if not paths:
        raise no_images_error(folder, recursive, "sdft data caption")
    scan = scan_images(paths)
    result = {"written": [], "kept": [], "unreadable": [str(p) for p, _ in scan.bad]}
    todo = []
    for path in scan.good:
        cap = caption_path(path, extension)
        if not overwrite and cap.is_file() and cap.read_text(encoding="utf-8", errors="replace").strip():
            result["kept"].append(str(path))
        else:
            todo.append(path)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        images = [load_rgb(p, target=(1024, 1024)) for p in batch]
        if isinstance(captioner, OnnxTagger):
            texts = [
                tags_text(pick_tags(row, captioner.tags, threshold, character_threshold, exclude_tags, max_tags))
                for row in captioner.probabilities(images)
            ]
        else:
            texts = captioner(images)
        for path, text in zip(batch, texts):
            cap = caption_path(path, extension)
            write_text(cap, ensure_trigger(text.strip(), trigger) + "\n")
            result["written"].append(str(path))
    return result
