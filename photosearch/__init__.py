"""photosearch: semantic photo search with CLIP.

A library first: `photosearch.Library` does everything the `photosearch` command does (the
CLI is a thin shell over it), and so can a script, a notebook or a server:

    import photosearch

    with photosearch.Library.open() as library:
        library.index(["~/Pictures"])
        for hit in library.search("a red bicycle", k=5):
            print(f"{hit.score:.3f} {hit.path}")

See docs/api.md. Heavy dependencies (torch, open_clip, faiss) are imported only by the calls
that need them, so importing this package, `--help` and `--version` stay instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "Classification",
    "Duplicate",
    "DuplicateGroup",
    "Failure",
    "Filters",
    "Hit",
    "IndexEvent",
    "IndexSummary",
    "LabelScore",
    "Library",
    "LibraryInfo",
    "Photo",
    "PhotosearchError",
    "__version__",
]

# Where each public name lives; imported on first use, so `photosearch --help` (which
# imports this package) pays for none of them.
_EXPORTS = {
    "Library": "photosearch.library",
    "Filters": "photosearch.filters",
    "PhotosearchError": "photosearch.errors",
    **{name: "photosearch.results" for name in ("Classification", "Duplicate", "DuplicateGroup", "Failure", "Hit", "IndexEvent", "IndexSummary", "LabelScore", "LibraryInfo", "Photo")},
}

if TYPE_CHECKING:
    from photosearch.errors import PhotosearchError
    from photosearch.filters import Filters
    from photosearch.library import Library
    from photosearch.results import (
        Classification,
        Duplicate,
        DuplicateGroup,
        Failure,
        Hit,
        IndexEvent,
        IndexSummary,
        LabelScore,
        LibraryInfo,
        Photo,
    )  # fmt: skip


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'photosearch' has no attribute {name!r}")
