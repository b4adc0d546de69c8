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


def cli_json(db, env: dict, *args: str) -> list[dict]:
    """`photosearch ARGS --db DB --json` in this process with `env`, its JSON lines read."""
    import json

    from typer.testing import CliRunner

    from photosearch.cli import app

    result = CliRunner().invoke(app, [*args, "--db", str(db), "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def indexed(db, folder, model: str, env: dict) -> list:
    """Index `folder` into the library `db` with `model`, under settings `env` (a module's
    own home and cache, which its server is then started with); the photos indexed."""
    import pytest

    from photosearch import Library

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        with Library.open(db, model=model) as library:
            library.index(folder)
            return list(library.photos())
