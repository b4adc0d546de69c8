"""docs/api.md's examples are run as written, in order, against a real library."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.cli import REPO
from tests.support.pictures import make_pictures


def test_every_example_in_the_api_docs_runs(tiny_model, isolated_home, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "api.md").read_text(), re.DOTALL)
    assert len(blocks) >= 4
    make_pictures(isolated_home / "Pictures", 12)
    monkeypatch.setenv("PHOTOSEARCH_MODEL", f"local-dir:{tiny_model}")
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "12 added, 0 failed" in out
    assert "no photo library at /nowhere/library.db" in out
    assert Path(isolated_home / "data" / "library.db").exists()
