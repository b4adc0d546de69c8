"""Every test gets its own home: library, data dir and model caches live in a temp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.tiny import write_random_tiny


def pytest_configure(config):
    """Module- and session-scoped fixtures run before the per-test home exists: give them a
    session home too, so no test ever writes to the real user's data or cache folders."""
    import tempfile

    session_home = Path(tempfile.mkdtemp(prefix="photosearch-tests-"))
    for name in _user_settings():
        del os.environ[name]
    os.environ["PHOTOSEARCH_HOME"] = str(session_home / "data")
    os.environ["HF_HOME"] = str(session_home / "hf")


def _user_settings() -> list[str]:
    """The PHOTOSEARCH_* variables of the environment, but the test suite's own."""
    return [n for n in os.environ if n.startswith("PHOTOSEARCH_") and n != "PHOTOSEARCH_TEST_CACHE"]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HOME", str(home))
    # Every setting a user's shell may carry (a library, a model, a precision, a cache...)
    # would change what a test sees. PHOTOSEARCH_TEST_CACHE is the test suite's own: where the
    # trained tiny model is kept between runs (tests/support/train.py).
    for name in _user_settings():
        monkeypatch.delenv(name)
    monkeypatch.setenv("PHOTOSEARCH_HOME", str(home / "data"))
    return home


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A randomly initialised tiny open_clip model in open_clip's local-dir format."""
    return write_random_tiny(tmp_path_factory.mktemp("models") / "tiny-random", seed=0)


@pytest.fixture(scope="session")
def other_tiny_model(tmp_path_factory) -> Path:
    return write_random_tiny(tmp_path_factory.mktemp("models") / "tiny-other", seed=1)


@pytest.fixture(scope="session")
def random_vit_b32(tmp_path_factory) -> Path:
    """ViT-B-32 with random weights, saved like open_clip's published safetensors files."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path_factory.mktemp("vit") / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture
def cli():
    """Run the CLI in this process (fast: torch stays imported). Returns click's Result."""
    from typer.testing import CliRunner

    from photosearch.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | bytes | None = None):
        return runner.invoke(app, list(args), input=input, catch_exceptions=False)

    return invoke


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report, kept on the test item: the browser tests' `page` fixture looks
    at it to save a screenshot when a test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def chromium():
    """Headless Chromium through Playwright (Debian's chromium: tests/support/browser.py),
    one a test module; missing, it fails under CI and skips elsewhere."""
    from tests.support import browser as browsers

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browsers.missing("Playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        launched = browsers.launch(playwright)
        yield launched
        launched.close()
