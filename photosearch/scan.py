"""Walk folders and list the photo files in them. No Pillow here: only the file system."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

PHOTO_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)


@dataclass(frozen=True)
class PhotoFile:
    path: bytes  # absolute, as the file system spells it (names needn't be UTF-8)
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ScanProblem:
    path: bytes
    reason: str


def content_fingerprint(path) -> str:
    """sha256 over size + first MiB + last KiB: recognises a file's content after a move or
    rename without reading all of it (a 24 MP JPEG or a 600 MB weights file alike).
    `path`: a path, or a file already open for binary reading (read from its start)."""
    if hasattr(path, "read"):
        return _fingerprint_of(path)
    with open(path, "rb") as f:
        return _fingerprint_of(f)


def _fingerprint_of(f) -> str:
    import hashlib

    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    h = hashlib.sha256(str(size).encode())
    h.update(f.read(1 << 20))
    if size > (1 << 20):
        f.seek(max(size - 1024, 1 << 20))
        h.update(f.read(1024))
    return h.hexdigest()


def is_photo_name(name: bytes) -> bool:
    return os.path.splitext(name)[1].decode("ascii", "replace").lower() in PHOTO_EXTENSIONS


def scan(
    roots: Iterable[bytes],
    *,
    include_hidden: bool = False,
    follow_symlinks: bool = False,
) -> Iterator[PhotoFile | ScanProblem]:
    """Yield every photo file under `roots` (absolute byte paths), and problems met on the way.

    Hidden files and folders (a leading dot) are skipped unless `include_hidden`.
    Symlinks are skipped unless `follow_symlinks`; then folders already visited (by device
    and inode) are not entered again, so a symlink loop ends.
    """
    visited: set[tuple[int, int]] = set()
    for root in roots:
        try:
            st = os.stat(root)
        except OSError as exc:
            yield ScanProblem(root, exc.strerror or str(exc))
            continue
        if stat.S_ISREG(st.st_mode):
            if is_photo_name(root):
                yield PhotoFile(root, st.st_size, st.st_mtime_ns)
            continue
        yield from _walk(root, st, include_hidden, follow_symlinks, visited)


def _walk(
    folder: bytes,
    st: os.stat_result,
    include_hidden: bool,
    follow_symlinks: bool,
    visited: set[tuple[int, int]],
) -> Iterator[PhotoFile | ScanProblem]:
    key = (st.st_dev, st.st_ino)
    if key in visited:
        yield ScanProblem(folder, "folder already visited (symlink loop?), not entered again")
        return
    visited.add(key)
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield ScanProblem(current, exc.strerror or str(exc))
            continue
        subfolders = []
        for entry in entries:
            if not include_hidden and entry.name.startswith(b"."):
                continue
            try:
                if entry.is_symlink() and not follow_symlinks:
                    continue
                entry_st = entry.stat(follow_symlinks=True)
            except OSError as exc:
                yield ScanProblem(entry.path, exc.strerror or str(exc))
                continue
            if stat.S_ISDIR(entry_st.st_mode):
                dir_key = (entry_st.st_dev, entry_st.st_ino)
                if dir_key in visited:
                    yield ScanProblem(entry.path, "folder already visited (symlink loop?), skipped")
                    continue
                visited.add(dir_key)
                subfolders.append(entry.path)
            elif stat.S_ISREG(entry_st.st_mode) and is_photo_name(entry.name):
                yield PhotoFile(entry.path, entry_st.st_size, entry_st.st_mtime_ns)
            # FIFOs, sockets and devices are never opened, whatever their names.
        stack.extend(reversed(subfolders))
