"""Write docs/cli.md, the CLI reference, from the commands' own --help.

    .venv/bin/python scripts/cli_docs.py          # rewrite docs/cli.md
    .venv/bin/python scripts/cli_docs.py --check  # exit 1 if docs/cli.md is out of date

tests/test_cli_docs.py runs the check, so the reference can't drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / "docs" / "cli.md"


def reference() -> str:
    import typer
    from typer.testing import CliRunner

    from photosearch.cli import app

    runner = CliRunner()
    env = {"COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"}
    names = list(typer.main.get_command(app).commands)
    parts = [
        "# photosearch command reference\n",
        "Generated from `--help` by `scripts/cli_docs.py`; the README explains the commands with examples.\n",
        _block(runner.invoke(app, ["--help"], env=env).output),
    ]
    for name in names:
        parts.append(f"## photosearch {name}\n")
        parts.append(_block(runner.invoke(app, [name, "--help"], env=env).output))
    return "\n".join(parts)


def _block(text: str) -> str:
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    return "```\n" + "\n".join(lines) + "\n```\n"


def main() -> int:
    text = reference()
    if "--check" in sys.argv[1:]:
        if not TARGET.exists() or TARGET.read_text() != text:
            print("docs/cli.md is out of date: run .venv/bin/python scripts/cli_docs.py", file=sys.stderr)
            return 1
        return 0
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
