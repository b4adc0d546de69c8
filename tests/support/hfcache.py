"""Put files into a Hugging Face hub cache the way a download would have left them."""

from __future__ import annotations

import shutil
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_to_hf_cache(hf_home: Path, repo: str, files: dict[str, Path]) -> Path:
    """Copy `files` (name in repo -> local file) into `hf_home`'s cache for `repo`."""
    org, name = repo.split("/")
    repo_dir = Path(hf_home) / "hub" / f"models--{org}--{name}"
    snapshot = repo_dir / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    for target, source in files.items():
        shutil.copyfile(source, snapshot / target)
    return snapshot
