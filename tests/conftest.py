"""Every test gets its own home: library, data dir and model caches live in a temp folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.tiny import write_random_tiny

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """Module- and session-scoped fixtures run before the per-test home exists: give them a
    session home too, so no test ever writes to the real user's data or cache folders."""
    import tempfile

    session_home = Path(tempfile.mkdtemp(prefix="photosearch-tests-"))
    os.environ["PHOTOSEARCH_HOME"] = str(session_home / "data")
    os.environ["HF_HOME"] = str(session_home / "hf")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PHOTOSEARCH_HOME", str(home / "data"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HOME", str(home))
    for name in ("PHOTOSEARCH_DB", "PHOTOSEARCH_MODEL", "PHOTOSEARCH_PRETRAINED", "PHOTOSEARCH_DEVICE", "PHOTOSEARCH_DEBUG"):
        monkeypatch.delenv(name, raising=False)
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


def make_pictures(folder: Path, n: int, *, seed: int = 0, prefix: str = "photo", ext: str = "jpg") -> list[Path]:
    """`n` different generated pictures (shapes on backgrounds), saved as real image files."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        bg = tuple(rng.randrange(256) for _ in range(3))
        img = Image.new("RGB", (rng.randrange(120, 320), rng.randrange(120, 320)), bg)
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            colour = tuple(rng.randrange(256) for _ in range(3))
            x, y = rng.randrange(img.width // 2), rng.randrange(img.height // 2)
            w, h = rng.randrange(20, img.width // 2), rng.randrange(20, img.height // 2)
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=colour)
        path = folder / f"{prefix}{i:03d}.{ext}"
        img.save(path)
        paths.append(path)
    return paths


def run_cli(*args: str, env: dict | None = None, input: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m photosearch` in a fresh process, as a user (or a pipeline) would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "photosearch", *args],
        capture_output=True,
        env=full_env,
        input=input,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.fixture
def cli():
    """Run the CLI in this process (fast: torch stays imported). Returns click's Result."""
    from typer.testing import CliRunner

    from photosearch.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | bytes | None = None):
        return runner.invoke(app, list(args), input=input, catch_exceptions=False)

    return invoke
