"""Which heavy modules a command imports: the check behind every "no torch for this" test.

A probe runs code in a fresh Python process, then reports which of the named modules ended
up in `sys.modules`. `cli_code` is the code for a `photosearch` command run in-process through
the Typer app, not `main()`, which ends a process that loaded torch without letting it finish
(and so without the report).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

from tests.support.cli import REPO

HEAVY = ("torch", "open_clip", "torchvision", "timm", "faiss", "onnxruntime", "numpy")
_MARK = "PROBE-IMPORTED="


@dataclass
class Probe:
    returncode: int
    stdout: str
    stderr: str  # without the probe's own report
    imported: set[str]  # those of the asked-for modules that were imported


def cli_code(*args: str) -> str:
    return (
        "import sys\n"
        "from photosearch.cli import app\n"
        f"sys.argv = ['photosearch', *{list(args)!r}]\n"
        "try:\n    app()\nexcept SystemExit as exit:\n    sys.exit_code_seen = exit.code\n"
    )


def probe(code: str, modules: tuple[str, ...] = HEAVY, *, env: dict | None = None, timeout: float = 300) -> Probe:
    """Run `code` in a fresh process with `env` added to ours; report what it imported."""
    report = f"\nimport sys as _s, json as _j\nprint({_MARK!r} + _j.dumps(sorted(m for m in {tuple(modules)!r} if m in _s.modules)), file=_s.stderr)\n"
    done = subprocess.run(
        [sys.executable, "-c", code + report], capture_output=True, text=True, cwd=REPO, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    lines = done.stderr.splitlines()
    marks = [line for line in lines if line.startswith(_MARK)]
    assert marks, f"the probe did not finish: {done.stderr}"
    rest = "".join(line + "\n" for line in lines if not line.startswith(_MARK))
    return Probe(done.returncode, done.stdout, rest, set(json.loads(marks[-1][len(_MARK) :])))
