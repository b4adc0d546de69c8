"""The map's layout and clusters, kept next to the library until the library changes.

A file next to the library, like the search index (`library.db.faiss`): a folder
`library.db.maps/` of one `.npz` per map (positions, clusters and their centres, example
photos), named by a key over the library's generation, the photos the filters let through,
and the layout options. The library's database is left alone (no schema change for a cache
that can always be thrown away), and a read-only library simply isn't cached. Entries of
older generations are dropped whenever a new one is written; at most `KEEP` are kept (a few
filtered maps of the same library).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

VERSION = 2  # of what an entry holds and how it was computed: a change makes old entries misses
KEEP = 8


def folder(library: Path) -> Path:
    return Path(str(library) + ".maps")


def key(generation: int, ids: np.ndarray | None, options: dict) -> str:
    """The entry's name: what the map was made of and how."""
    photos = "all" if ids is None else hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes()).hexdigest()
    text = json.dumps([VERSION, generation, photos, options], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load(library: Path, name: str) -> dict[str, np.ndarray] | None:
    """The entry's arrays, or None if there is none (or it can't be read: a cache miss)."""
    path = folder(library) / f"{name}.npz"
    try:
        with np.load(path, allow_pickle=False) as entry:
            loaded = {k: entry[k] for k in entry.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # most recently used: kept longest
    return loaded


def save(library: Path, name: str, generation: int, arrays: dict[str, np.ndarray]) -> bool:
    """Write the entry (atomically) and drop stale ones; False if the folder can't be written."""
    where = folder(library)
    try:
        where.mkdir(exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=where, prefix=".", suffix=".npz")
        with os.fdopen(fd, "wb") as out:
            np.savez(out, generation=np.int64(generation), **arrays)
        os.replace(temporary, where / f"{name}.npz")
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(temporary)
        return False
    _prune(where, generation, keep=name)
    return True


def _prune(where: Path, generation: int, keep: str) -> None:
    entries = []
    for path in where.glob("*.npz"):
        if path.stem == keep:
            continue
        try:
            with np.load(path, allow_pickle=False) as entry:
                stale = int(entry["generation"]) != generation
            entries.append((path.stat().st_mtime, path, stale))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            entries.append((0.0, path, True))
    entries.sort(reverse=True)
    for number, (_, path, stale) in enumerate(entries, start=2):
        if stale or number > KEEP:
            with contextlib.suppress(OSError):
                path.unlink()
