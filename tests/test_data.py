"""Data: folder checks with clear errors, image loading rules, captions, pairing, class-image generation."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdft.data.captions import read_captions
from sdft.data.class_images import ensure_class_images
from sdft.data.images import collect_images, load_rgb, resize_crop, to_tensor
from sdft.errors import DataError


def write_image(path: Path, size=(32, 24), color=(200, 30, 30), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        collect_images(tmp_path / "nope", True, "data.instance_dir")


def test_empty_folder_says_what_it_found(tmp_path):
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(DataError, match=r"no images in .*notes\.md"):
        collect_images(tmp_path, True, "data.instance_dir")


def test_unreadable_images_are_all_listed(tmp_path):
    write_image(tmp_path / "good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(DataError) as err:
        collect_images(tmp_path, True, "data.instance_dir")
    assert "2 of 3" in str(err.value) and "empty.png" in str(err.value) and "text.jpg" in str(err.value)
    assert "good.png" not in str(err.value)


def test_subfolders_are_searched_when_recursive(tmp_path):
    write_image(tmp_path / "a" / "x.png")
    write_image(tmp_path / "b.png")
    assert len(collect_images(tmp_path, True, "d")) == 2
    assert len(collect_images(tmp_path, False, "d")) == 1


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").size == (20, 40)


def test_transparency_is_composited_on_white(tmp_path):
    write_image(tmp_path / "t.png", color=(255, 0, 0, 0), mode="RGBA")
    assert load_rgb(tmp_path / "t.png").getpixel((0, 0)) == (255, 255, 255)


def test_resize_crop_and_tensor_range():
    img = Image.new("RGB", (100, 50), (255, 0, 0))
    out = resize_crop(img, 32, center=True)
    assert out.size == (32, 32)
    t = to_tensor(out)
    assert t.shape == (3, 32, 32) and t.max() == 1.0 and t.min() == -1.0


def test_captions_sidecar_and_fallback(tmp_path, caplog):
    a, b = write_image(tmp_path / "a.png"), write_image(tmp_path / "b.png")
    (tmp_path / "a.txt").write_text("photo of sks dog on a beach\n")
    with caplog.at_level(logging.INFO):
        assert read_captions([a, b], "photo of sks dog", ".txt", True) == [
            "photo of sks dog on a beach",
            "photo of sks dog",
        ]
    assert "1 of 2" in caplog.text
    assert read_captions([a, b], "p", ".txt", False) == ["p", "p"]


def test_caption_extension_matching_nothing_warns(tmp_path, caplog):
    a = write_image(tmp_path / "a.png")
    (tmp_path / "a.caption").write_text("x")
    with caplog.at_level(logging.WARNING):
        read_captions([a], "p", ".txt", True)
    assert "caption_extension" in caplog.text


class FakePipe:
    """Counts generated images; returns a solid colour per seed so files are comparable."""

    def __init__(self):
        self.generated = 0

    def to(self, device):
        return self

    def set_progress_bar_config(self, **kw):
        pass

    def __call__(self, prompts, generator, height, width, **kw):
        self.generated += len(prompts)
        images = [
            Image.new("RGB", (width, height), tuple(int(x) for x in torch.randint(0, 255, (3,), generator=g)))
            for g in generator
        ]
        return type("Out", (), {"images": images})()


def test_class_images_fill_reuse_top_up_and_resume(tmp_path):
    args = dict(prompt="photo of a dog", resolution=16, seed=7, batch_size=2, steps=1)
    pipe = FakePipe()
    first = ensure_class_images(pipe, tmp_path, num_images=3, **args)
    assert len(first) == 3 and pipe.generated == 3
    assert "photo of a dog" in Image.open(first[0]).text["parameters"]
    ensure_class_images(pipe, tmp_path, num_images=3, **args)
    assert pipe.generated == 3  # reused, nothing generated
    assert len(ensure_class_images(pipe, tmp_path, num_images=5, **args)) == 5
    assert pipe.generated == 5  # topped up by 2
    lost = tmp_path / "class_00001.png"
    before = np.asarray(Image.open(lost))
    lost.unlink()  # an interrupted run lost this one
    ensure_class_images(pipe, tmp_path, num_images=5, **args)
    assert pipe.generated == 6 and np.array_equal(np.asarray(Image.open(lost)), before)
    assert not list(tmp_path.glob(".*tmp"))


def test_class_images_with_the_tiny_model(tiny_pipe_factory, tmp_path):
    paths = ensure_class_images(tiny_pipe_factory(), tmp_path, "photo of a character", 2, 64, 0, batch_size=2, steps=2)
    assert [p.name for p in paths] == ["class_00000.png", "class_00001.png"]
    assert Image.open(paths[0]).size == (64, 64)


def test_class_images_per_concept_and_loss_weights(tmp_path):
    from omegaconf import OmegaConf

    from sdft.config import ConceptConfig, SdftConfig
    from sdft.data.datamodule import DreamBoothDataModule, scan_dataset, training_settings
    from sdft.data.prior import prior_examples

    for k in range(2):
        write_image(tmp_path / "dog" / f"{k}.png", color=(10 * k, 0, 0))
        write_image(tmp_path / "cat" / f"{k}.png", color=(0, 10 * k, 0))
    cfg = OmegaConf.structured(SdftConfig)
    cfg.model.path = "tiny"
    cfg.prior.enabled, cfg.prior.num_class_images, cfg.prior.generation_steps = True, 2, 1
    cfg.data.resolution = 16
    cfg.data.concepts = [
        ConceptConfig(
            instance_dir=str(tmp_path / "dog"),
            instance_prompt="photo of sks dog",
            class_prompt="photo of a dog",
            class_dir=str(tmp_path / "cls_dog"),
            loss_weight=2.0,
        ),
        ConceptConfig(
            instance_dir=str(tmp_path / "cat"),
            instance_prompt="photo of ohwx cat",
            class_prompt="photo of a cat",
            class_dir=str(tmp_path / "cls_cat"),
        ),
    ]
    pipe = FakePipe()
    classes = prior_examples(cfg, pipe, scan_dataset(cfg.data))
    assert pipe.generated == 4 and len(classes) == 4
    assert {(ex.path.parent.name, ex.prompt) for ex in classes} == {
        ("cls_dog", "photo of a dog"),
        ("cls_cat", "photo of a cat"),
    }
    assert "photo of a cat" in Image.open(tmp_path / "cls_cat" / "class_00000.png").text["parameters"]
    prior_examples(cfg, pipe, scan_dataset(cfg.data))
    assert pipe.generated == 4  # reused across runs

    class Tok:
        model_max_length = 4

        def __call__(self, prompt, **kw):
            return type("T", (), {"input_ids": torch.tensor([[len(prompt)] * 4])})()

    dm = DreamBoothDataModule(training_settings(cfg.data), Tok(), scan_dataset(cfg.data).examples, classes, seed=0)
    dm.setup()
    for batch in dm.train_dataloader():
        n = int((~batch["is_prior"]).sum())
        prompts = batch["input_ids"][:, 0].tolist()
        for k in range(n):  # each instance sample is paired with a class image of its own class
            dog = prompts[k] == len("photo of sks dog")
            assert prompts[n + k] == len("photo of a dog" if dog else "photo of a cat")
            assert batch["loss_weight"][k] == (2.0 if dog else 1.0)
        assert batch["loss_weight"][n:].tolist() == [1.0] * n


def test_other_local_ranks_wait_for_rank_zeros_class_images(tmp_path, monkeypatch):
    """Under DDP only local rank 0 generates class images; the others use its files (and never run the pipeline)."""
    import threading
    import time

    from PIL import Image

    from sdft.data.class_images import ensure_class_images, wait_for_class_images

    class NoPipe:
        def __getattr__(self, name):
            raise AssertionError("a non-zero rank must not generate")

    def rank_zero_writes():
        time.sleep(0.3)
        for k in range(3):
            Image.new("RGB", (8, 8), (k, 0, 0)).save(tmp_path / f"class_{k:05d}.png")

    monkeypatch.setenv("LOCAL_RANK", "1")
    writer = threading.Thread(target=rank_zero_writes)
    writer.start()
    paths = ensure_class_images(NoPipe(), tmp_path, "photo of a dog", 3, 8, seed=0)
    writer.join()
    assert [p.name for p in paths] == ["class_00000.png", "class_00001.png", "class_00002.png"]
    with pytest.raises(TimeoutError, match="3 of 4 class images"):
        wait_for_class_images(tmp_path, 4, timeout_s=0.2, poll_s=0.05)
