"""The doctor's HTML page in a real headless browser (Debian's chromium via playwright, as tests/test_ui_browser.py):
one self-contained file whose findings show their images' thumbnails, the near-duplicates side by side."""

from __future__ import annotations

from helpers.doctor_sets import grace, skimage_photo
from helpers.photos import astronaut
from PIL import Image
from helpers.browser import CHROMIUM, CHROMIUM_ARGS, need_chromium

from sdft.prep.check import load_data_config
from sdft.prep.doctor.html import write_html
from sdft.prep.doctor.inputs import from_data_settings
from sdft.prep.doctor.run import doctor


def test_html_page_shows_findings_with_thumbnails(tmp_path):
    need_chromium()
    root = tmp_path / "set"
    root.mkdir()
    astronaut().save(root / "a.png")
    astronaut().resize((400, 400)).save(root / "a_small.jpg", quality=75)  # near-duplicate of a.png
    grace().save(root / "grace.png")
    skimage_photo("coffee").save(root / "coffee.png")
    Image.new("RGB", (300, 300), (250, 250, 250)).save(root / "white.png")  # over-exposed, flat
    result = doctor([from_data_settings(load_data_config(str(root), "photo of x", ["resolution=256"]), "set")])
    page_file = write_html(result, tmp_path / "report" / "report.html")
    text = page_file.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text  # self-contained
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(page_file.as_uri())
        near = page.locator(".f", has_text="near-identical")
        assert near.count() == 1
        imgs = near.locator("img")
        assert imgs.count() == 2  # the cluster's two images, together
        widths = imgs.evaluate_all("els => els.map(e => e.complete ? e.naturalWidth : 0)")
        assert min(widths) > 0  # the inlined thumbnails decode
        severities = page.locator(".sev").all_inner_texts()
        assert severities and severities[0].lower() == "severe"  # worst first
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    shot = Image.open(tmp_path / "report.png")
    assert shot.size[0] == 1100 and shot.size[1] > 300
