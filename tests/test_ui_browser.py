"""`sdft ui` in a real headless browser: Debian's chromium driven by playwright types a prompt, generates with the
tiny model, and finds the image in the gallery and on disk (with its A1111 parameters); then img2img, a LoRA
re-weighting that must not reload the base, a LoRA named in the prompt (`<lora:name:weight>`) and an error shown in
the page; and the shipped 32 px toy base generating with the page's default size."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
from PIL import Image
from helpers.browser import CHROMIUM, CHROMIUM_ARGS, need_chromium
from helpers.loras import make_lora

import sdft.generation.generator as generator_module
from sdft.config import ModelConfig
from sdft.generation.generator import Generator
from sdft.ui.app import build_app, launch
from sdft.ui.session import UiSession

TIMEOUT_MS = 30_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tiny_cache, tiny_pipe_factory, tmp_path, monkeypatch):
    """The app on 127.0.0.1 in a thread, over a Generator whose load_pipeline calls are counted; closed after."""
    need_chromium()
    calls = []
    real = generator_module.load_pipeline
    monkeypatch.setattr(generator_module, "load_pipeline", lambda cfg: calls.append(cfg) or real(cfg))
    lora = make_lora(tiny_pipe_factory(), tmp_path / "loras" / "style_b.safetensors")
    session = UiSession(Generator(ModelConfig(path="tiny", cache_dir=str(tiny_cache)), device="cpu"), tmp_path / "out")
    app = build_app(session, lora_dir=str(tmp_path / "loras"))
    _, url, _ = launch(app, session, port=_free_port(), block=False)
    try:
        yield url, session, lora, calls
    finally:
        app.close()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        browser.close()


def _set(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Tab")  # gradio takes number inputs on change (blur)


def _gallery_images(page, count: int) -> list[Image.Image]:
    """Wait for `count` images in the gallery; fetch each one's src and decode it."""
    page.wait_for_function(f"document.querySelectorAll('#gallery img').length === {count}")
    images = []
    for img in page.locator("#gallery img").all():
        response = page.request.get(img.evaluate("e => e.src"))
        assert response.ok, response.status
        images.append(Image.open(io.BytesIO(response.body())))
    return images


def _wait_files(folder: Path, count: int, page) -> list[Path]:
    page.wait_for_function("() => document.querySelectorAll('#gallery img').length > 0")
    for _ in range(100):
        files = sorted(folder.glob("*.png"))
        if len(files) >= count:
            return files
        page.wait_for_timeout(100)
    raise AssertionError(f"{folder} holds {len(files)} PNG(s), expected {count}")


@pytest.fixture
def served_toy(tmp_path):
    """The app over the shipped toy base (32 px, the quickstart's model)."""
    need_chromium()
    session = UiSession(Generator(ModelConfig(path="toy"), device="cpu"), tmp_path / "out")
    app = build_app(session, lora_dir=str(tmp_path))
    _, url, _ = launch(app, session, port=_free_port(), block=False)
    try:
        yield url, session
    finally:
        app.close()


def test_the_toy_model_generates_at_its_own_size(served_toy, page):
    """Issue 33 #12: the size sliders come from the model, so the 32 px toy generates with the page's defaults."""
    url, session = served_toy
    page.goto(url)
    assert page.get_by_label("number input for Width", exact=True).input_value() == "32"
    assert page.get_by_label("number input for Width", exact=True).get_attribute("min") == "8"
    page.locator("#prompt textarea").fill("a red dog")
    _set(page, "number input for Sampling steps", 2)
    _set(page, "Seed (-1: random)", 7)
    page.locator("#generate").click()
    (image,) = _gallery_images(page, 1)
    assert image.size == (32, 32)
    (file,) = _wait_files(session.out_dir, 1, page)
    with Image.open(file) as png:
        assert "Size: 32x32, Model: toy" in png.text["parameters"]
    assert page.locator(".toast-body.error").count() == 0  # no red error badge


def test_generate_in_the_browser_shows_and_saves_the_image(served, page, tmp_path):
    url, session, lora, calls = served
    out = session.out_dir
    page.goto(url)
    page.locator("#prompt textarea").fill("photo of sks dog")
    _set(page, "number input for Sampling steps", 2)
    _set(page, "number input for Width", 64)
    _set(page, "number input for Height", 64)
    _set(page, "number input for Batch size", 2)
    _set(page, "Seed (-1: random)", 1234)
    page.locator("#generate").click()

    images = _gallery_images(page, 2)
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert max(images[0].convert("L").getextrema()) > 0  # decoded pixels, not an empty/broken image
    files = _wait_files(out, 2, page)
    assert [f.name for f in files] == ["00000-1234.png", "00001-1235.png"]
    with Image.open(files[0]) as png:
        text = png.text["parameters"]
    assert text.startswith("photo of sks dog\nSteps: 2, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1234, ")
    assert "Size: 64x64, Model: tiny" in text
    page.wait_for_function("document.querySelector('#infotext textarea').value.includes('Seed: 1234')")
    page.locator("#gallery img").nth(1).click()  # selecting an image shows its own parameters
    page.wait_for_function("document.querySelector('#infotext textarea').value.includes('Seed: 1235')")

    # a LoRA from the scan, at 0.5: the same base pipeline renders it
    pipe = session.generator.pipe
    page.get_by_role("button", name="Scan").click()
    page.get_by_label("Found LoRAs").click()
    page.get_by_role("option", name=lora.name).click()  # shown relative to the scanned folder
    _set(page, "Weight", 0.5)
    page.get_by_role("button", name="Add").click()
    page.wait_for_function(f"document.querySelector('#loras textarea').value === {str(lora) + ':0.5'!r}")
    _set(page, "number input for Batch size", 1)
    page.locator("#generate").click()
    page.wait_for_function("document.querySelector('#infotext textarea').value.includes('<lora:style_b:0.5>')")
    assert len(_wait_files(out, 3, page)) == 3
    assert len(calls) == 1 and session.generator.pipe is pipe  # the base was loaded once, never again
    page.get_by_text("style_b", exact=False).first.wait_for()

    # img2img: upload the first image, strength 0.5
    page.get_by_role("tab", name="img2img").click()
    page.locator("#init-image input[type=file]").set_input_files(str(files[0]))
    page.locator("#init-image img").first.wait_for()
    _set(page, "number input for Denoising strength", 0.5)
    page.locator("#generate-img2img").click()
    page.wait_for_function("document.querySelector('#infotext textarea').value.includes('Denoising strength: 0.5')")
    newest = _wait_files(out, 4, page)[-1]
    with Image.open(newest) as png:
        assert png.size == (64, 64) and "Denoising strength: 0.5" in png.text["parameters"]

    # A1111's prompt syntax: the LoRA named in the prompt (looked up under the scanned folder), the box emptied
    page.locator("#loras textarea").fill("")
    page.locator("#prompt textarea").fill("photo of sks dog <lora:style_b:0.5>")
    page.get_by_role("tab", name="txt2img").click()
    page.locator("#generate").click()
    page.wait_for_function("document.querySelector('#infotext textarea').value.includes('Seed: 1234, Size: 64x64')")
    page.wait_for_function(
        "document.querySelector('#infotext textarea').value.startsWith('photo of sks dog <lora:style_b:0.5>\\nSteps')"
    )
    assert len(_wait_files(out, 5, page)) == 5

    shot = tmp_path / "ui.png"  # what a user sees after generating (looked at while writing this test)
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] >= 1280

    # a bad LoRA path: a readable message in the page, no crash, nothing written
    page.locator("#loras textarea").fill(str(tmp_path / "missing.safetensors"))
    page.get_by_role("tab", name="txt2img").click()
    page.locator("#generate").click()
    page.get_by_text("no such file", exact=False).first.wait_for()
    assert len(list(out.glob("*.png"))) == 5
    page.screenshot(path=str(tmp_path / "ui_error.png"), animations="disabled")
