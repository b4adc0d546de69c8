"""A real browser for the gallery's tests: the system's Chromium, driven by Playwright.

Playwright's own browser download is never used (it can't work offline, and a system
browser is what `make test` installs: scripts/ensure-browser). The executable is
PHOTOSEARCH_TEST_BROWSER, else the first of CANDIDATES on PATH. Under CI=true a missing
browser fails the tests that need it: it never skips them.
"""

from __future__ import annotations

import os
import shutil

import pytest

ENV_BROWSER = "PHOTOSEARCH_TEST_BROWSER"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# Headless, and quiet on a closed network: no background fetches, updates or sync.
ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
]  # fmt: skip


def executable() -> str | None:
    given = os.environ.get(ENV_BROWSER)
    if given:
        return shutil.which(given) or (given if os.path.exists(given) else None)
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


def missing(reason: str) -> None:
    """No browser: a failure under CI, a skip (with what to do) elsewhere."""
    message = f"{reason}; `make test` installs Chromium on Debian, or set {ENV_BROWSER}=/path/to/chrome"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def launch(playwright):
    path = executable()
    if path is None:
        missing("no Chromium or Chrome found")
    return playwright.chromium.launch(executable_path=path, args=ARGS, headless=True)
