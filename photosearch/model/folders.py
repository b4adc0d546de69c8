"""Cache folders written whole: filled under a temporary name, then renamed into place, so a
reader (a query, an index run in another process) sees a whole folder or none."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_whole(final: Path, fill: Callable[[Path], None], marker: str) -> bool:
    """Replace `final` with a folder that `fill(work)` writes; `marker` is the file whose
    presence makes a folder whole (another process may have finished first). False when it
    couldn't be written: these folders only save time."""
    work = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", suffix=".tmp", dir=final.parent))
        fill(work)
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)  # stale: the checkpoint moved or changed
        try:
            os.rename(work, final)
        except OSError:  # another process finished first
            return (final / marker).is_file()
        return True
    except OSError:
        return False
    finally:
        if work is not None and work.exists():
            shutil.rmtree(work, ignore_errors=True)
