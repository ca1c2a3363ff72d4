"""Class (prior-preservation) images: generated once with the base model, kept, reused and topped up."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import torch
from PIL.PngImagePlugin import PngInfo
from tqdm.auto import tqdm

from sdft.atomic import atomic_path
from sdft.data.images import list_images

log = logging.getLogger(__name__)


def slug(text: str, max_len: int = 60) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:max_len] or "untitled"


def default_class_dir(model_path: str, class_prompt: str, resolution: int, root: Path = Path("datasets")) -> Path:
    """datasets/class_images/<model>/<prompt>_<resolution>: class images depend on all three."""
    model = slug(Path(model_path.rstrip("/")).name if Path(model_path).exists() else model_path)
    return root / "class_images" / model / f"{slug(class_prompt)}_{resolution}"


def ensure_class_images(
    pipe,
    class_dir: Path,
    prompt: str,
    num_images: int,
    resolution: int,
    seed: int,
    batch_size: int = 4,
    steps: int = 30,
    guidance: float = 7.5,
    negative_prompt: str = "",
) -> list[Path]:
    """Make sure `class_dir` holds at least `num_images` images; generate only the missing ones.

    Image k is generated from seed + k and written as class_<k>.png via a temp name, so an interrupted run resumes
    where it stopped and produces the same images.
    """
    class_dir.mkdir(parents=True, exist_ok=True)
    existing = list_images(class_dir, recursive=False)
    missing = num_images - len(existing)
    if missing <= 0:
        log.info("Prior preservation: using %d existing class images in %s.", num_images, class_dir)
        return existing[:num_images]
    # multi-GPU: local rank 0 generates, the other processes of the node wait for its files. Not LightningDataModule
    # .prepare_data (issue 19): that hook runs inside Trainer.fit, after the phase's adapters are set up, and class
    # images must come from the weights as they are before (sdft/run/train.py prepare), with no Trainer yet.
    if local_rank() > 0:
        return wait_for_class_images(class_dir, num_images)
    taken = {p.stem for p in existing}
    todo = [k for k in range(num_images + len(existing)) if f"class_{k:05d}" not in taken][:missing]
    log.info("Prior preservation: generating %d class images for %r into %s.", missing, prompt, class_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    for start in tqdm(
        range(0, len(todo), batch_size), desc="class images", unit="batch", disable=None
    ):  # None: no bar off a terminal
        ks = todo[start : start + batch_size]
        generators = [torch.Generator(device).manual_seed(seed + k) for k in ks]
        with torch.no_grad():
            images = pipe(
                [prompt] * len(ks),
                negative_prompt=[negative_prompt] * len(ks) if negative_prompt else None,
                num_inference_steps=steps,
                guidance_scale=guidance,
                height=resolution,
                width=resolution,
                generator=generators,
            ).images
        for k, image in zip(ks, images):
            info = PngInfo()
            info.add_text("parameters", f"{prompt}\nSteps: {steps}, CFG scale: {guidance}, Seed: {seed + k}")
            final = class_dir / f"class_{k:05d}.png"
            with atomic_path(final) as tmp:
                image.save(tmp, format="PNG", pnginfo=info)
    return list_images(class_dir, recursive=False)


def local_rank() -> int:
    """This process's rank on its node, from the launcher's environment (Lightning, torchrun, SLURM); 0 alone."""
    for var in ("LOCAL_RANK", "SLURM_LOCALID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def wait_for_class_images(
    class_dir: Path, num_images: int, timeout_s: float = 4 * 3600, poll_s: float = 2.0
) -> list[Path]:
    start = time.monotonic()
    log.info("Waiting for local rank 0 to generate %d class images in %s.", num_images, class_dir)
    while len(found := list_images(class_dir, recursive=False)) < num_images:
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(
                f"{len(found)} of {num_images} class images in {class_dir} after {timeout_s:.0f} s: "
                "did local rank 0 fail? Its log says why; generating them in a single-process run "
                "first also works (they are reused)."
            )
        time.sleep(poll_s)
    return found
