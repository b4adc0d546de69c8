"""Running photosearch as a user (or a pipeline) would: a fresh process, or in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


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
