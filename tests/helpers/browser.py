"""Debian's headless chromium for page tests (the set-up of tests/test_ui_browser.py, without importing the UI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# headless, and no network chatter: this machine has no internet and chromium would keep retrying connections
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def need_chromium() -> None:
    if CHROMIUM.is_file():
        return
    reason = "install Debian's chromium (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: {reason}; .ci/run installs it before the tests.")
    pytest.skip(reason)
