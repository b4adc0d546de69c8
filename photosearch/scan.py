"""Walk folders and list the photo files in them. No Pillow here: only the file system."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from photosearch.ignore import IGNORE_FILE, IgnoreFileError, IgnoreRules

# Camera RAW files, decoded by LibRaw (photosearch/raw.py).
RAW_EXTENSIONS = frozenset({".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2"})
# What a camera (or phone) writes beside a RAW in RAW+JPEG mode: its own rendering.
RENDERED_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".heic", ".heif", ".hif"})
PHOTO_EXTENSIONS = (
    frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
    | frozenset({".heic", ".heif", ".hif", ".avif"})
    | RAW_EXTENSIONS
)
# `raw_pairs`: which file of a RAW+JPEG (or RAW+HEIC) pair is indexed.
RAW_PAIRS = ("jpeg", "raw", "both")
DEFAULT_RAW_PAIRS = "jpeg"


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
    rules: IgnoreRules | None = None,
) -> Iterator[PhotoFile | ScanProblem]:
    """Yield every photo file under `roots` (absolute byte paths), and problems met on the way.

    What `rules` exclude is left out (default: `IgnoreRules()`, the default patterns and
    .photosearchignore files), and an excluded folder is never listed. A folder whose
    .photosearchignore can't be read or parsed is a problem, and isn't walked.

    Hidden files and folders (a leading dot) are skipped unless `include_hidden`.
    Symlinks are skipped unless `follow_symlinks`; then folders already visited (by device
    and inode) are not entered again, so a symlink loop ends.
    """
    visited: set[tuple[int, int]] = set()
    rules = IgnoreRules() if rules is None else rules
    for root in roots:
        try:
            st = os.stat(root)
        except OSError as exc:
            yield ScanProblem(root, exc.strerror or str(exc))
            continue
        if rules.excluded(root, root, stat.S_ISDIR(st.st_mode)):
            yield ScanProblem(root, "excluded by an ignore rule, not indexed")
            continue
        if stat.S_ISREG(st.st_mode):
            if is_photo_name(root):
                yield PhotoFile(root, st.st_size, st.st_mtime_ns)
            continue
        yield from _walk(root, st, include_hidden, follow_symlinks, visited, rules)


def _walk(
    folder: bytes,
    st: os.stat_result,
    include_hidden: bool,
    follow_symlinks: bool,
    visited: set[tuple[int, int]],
    rules: IgnoreRules,
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
        try:
            rules.load(current, has_file=any(e.name == IGNORE_FILE for e in entries))
        except IgnoreFileError as exc:  # its photos are kept: we can't tell what it excludes
            yield ScanProblem(current, exc.reason)
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
                if rules.excluded(folder, entry.path, is_dir=True):
                    continue  # never listed: a Synology @eaDir can hold thousands of files
                dir_key = (entry_st.st_dev, entry_st.st_ino)
                if dir_key in visited:
                    yield ScanProblem(entry.path, "folder already visited (symlink loop?), skipped")
                    continue
                visited.add(dir_key)
                subfolders.append(entry.path)
            elif stat.S_ISREG(entry_st.st_mode) and is_photo_name(entry.name):
                if rules.excluded(folder, entry.path, is_dir=False):
                    continue
                yield PhotoFile(entry.path, entry_st.st_size, entry_st.st_mtime_ns)
            # FIFOs, sockets and devices are never opened, whatever their names.
        stack.extend(reversed(subfolders))


def choose_raw_pairs(items: Iterable[PhotoFile | ScanProblem], raw_pairs: str = DEFAULT_RAW_PAIRS) -> Iterator[PhotoFile | ScanProblem]:
    """`items` (from `scan`) less one file of each RAW+JPEG pair: a RAW file and a JPEG or
    HEIC with the same stem (any case) in the same folder. "jpeg" keeps the JPEG/HEIC (the
    camera's own rendering, and far cheaper to decode), "raw" the RAW, "both" both.
    Relies on `scan` yielding a folder's files together (one directory listing each)."""
    if raw_pairs not in RAW_PAIRS:
        raise ValueError(f"raw_pairs must be one of {', '.join(RAW_PAIRS)}, not {raw_pairs!r}")
    if raw_pairs == "both":
        yield from items
        return
    folder: bytes | None = None
    held: list[PhotoFile] = []
    for item in items:
        if isinstance(item, ScanProblem):
            yield item
            continue
        parent = os.path.dirname(item.path)
        if parent != folder:
            yield from _without_pair_duplicates(held, raw_pairs)
            folder, held = parent, []
        held.append(item)
    yield from _without_pair_duplicates(held, raw_pairs)


def _without_pair_duplicates(files: list[PhotoFile], raw_pairs: str) -> list[PhotoFile]:
    def kind(file: PhotoFile) -> tuple[bytes, str | None]:
        stem, ext = os.path.splitext(os.path.basename(file.path))
        ext_text = ext.decode("ascii", "replace").lower()
        what = "raw" if ext_text in RAW_EXTENSIONS else "jpeg" if ext_text in RENDERED_EXTENSIONS else None
        return stem.lower(), what

    kinds = [kind(f) for f in files]
    stems = {what: {stem for stem, w in kinds if w == what} for what in ("raw", "jpeg")}
    paired = stems["raw"] & stems["jpeg"]
    drop = "raw" if raw_pairs == "jpeg" else "jpeg"
    return [f for f, (stem, what) in zip(files, kinds, strict=True) if not (what == drop and stem in paired)]
