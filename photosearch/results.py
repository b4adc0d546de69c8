"""What `Library` returns: small typed records, the same ones every front end renders.

Paths are `pathlib.Path`s decoded from the stored bytes with the file system's encoding
(`os.fsdecode`), so a name that isn't valid UTF-8 survives: `os.fsencode(hit.path)` gives
back the exact bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Photo:
    """An indexed photo."""

    id: int  # the library's row id: stable while the photo stays indexed
    path: Path
    size_bytes: int
    width: int | None  # pixels, upright (EXIF orientation applied)
    height: int | None
    taken_at: str | None  # ISO 8601 local time: EXIF DateTimeOriginal, else the file's mtime

    @classmethod
    def from_row(cls, info) -> "Photo":
        return cls(info.id, Path(os.fsdecode(info.path)), info.size, info.width, info.height, info.taken_at)


@dataclass(frozen=True)
class Hit:
    """One search result, best first (`rank` 1)."""

    id: int
    path: Path
    score: float  # cosine similarity between the query and the photo, -1..1
    rank: int
    width: int | None
    height: int | None
    size_bytes: int
    taken_at: str | None

    @classmethod
    def of(cls, photo: Photo, score: float, rank: int) -> "Hit":
        return cls(photo.id, photo.path, score, rank, photo.width, photo.height, photo.size_bytes, photo.taken_at)


@dataclass(frozen=True)
class LabelScore:
    label: str
    probability: float


@dataclass(frozen=True)
class Classification:
    """A photo's best labels, most probable first (softmax over the labels given)."""

    path: Path
    id: int | None  # None for a photo that isn't in the library
    labels: list[LabelScore]

    @property
    def label(self) -> str:
        return self.labels[0].label

    @property
    def probability(self) -> float:
        return self.labels[0].probability


@dataclass(frozen=True)
class Duplicate:
    photo: Photo
    similarity: float  # cosine to the group's first photo


@dataclass(frozen=True)
class DuplicateGroup:
    """Photos within the threshold of each other (connected through pairs that are)."""

    group: int  # 1-based, biggest group first
    members: list[Duplicate]

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class Failure:
    """A photo that could not be indexed; not retried until the file changes."""

    path: Path
    reason: str
    failed_at: str


@dataclass
class LibraryInfo:
    """Where a library lives, which model made it, what its search index holds."""

    library: Path
    data_dir: Path
    exists: bool
    model: str | None = None
    pretrained: str | None = None
    weights_fingerprint: str | None = None
    dim: int | None = None
    vector_dtype: str | None = None
    crops: str | None = None  # how photos are cut for the model (model/cut.py CROPS)
    photos: int | None = None
    failures: int | None = None
    index_file: Path | None = None
    index_kind: str | None = None
    index_vectors: int | None = None
    tile_index_vectors: int | None = None  # `--crops max`: the tiles' index (docs/whole-frame.md)
    tile_index_kind: str | None = None  # its kind: at a million entries and up, compressed (docs/big-index.md)
    index_status: str | None = None  # 'current', 'stale' (caught up on the next query) or 'missing'
    library_bytes: int | None = None
    index_bytes: int | None = None
    created_at: str | None = None


@dataclass
class IndexEvent:
    """What an index run is doing, for a progress display (`Library.index(on_event=…)`)."""

    kind: str  # 'problem' | 'skipped' | 'planned' | 'recut' | 'model' | 'progress' | 'saving'
    #            | 'warning' | 'thumbnails' | 'thumbnail-failed' | 'cluster'
    # recut: `total` unchanged photos will be embedded again, cut the way `reason` names
    # (index(crops=…) changed it, or a library from before there was a choice meets the default).
    # problem: a folder or file that couldn't be walked; skipped: a photo that couldn't be
    # indexed (both with `path` and `reason`); planned: `total` photos to encode; model: the
    # model (`reason`, its name) is loading; progress: `done` of `total`; saving: the search
    # index is being brought up to date; warning: something a person should hear (`reason`),
    # e.g. no thumbnails this run. With index(thumbnails=True): thumbnails, `done` of `total`
    # in the pass over photos indexed before; thumbnail-failed: the photo at `path` is indexed
    # but got no thumbnail (`reason`). With index(ray=…): cluster, the `total` Ray nodes in use
    # and their names (`reason`), at the start and whenever a node leaves.
    path: bytes | None = None
    reason: str | None = None
    total: int = 0
    done: int = 0


@dataclass
class IndexSummary:
    """What an index run did."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    excluded: int = 0  # of the removed, those an ignore rule now excludes (the rest vanished)
    unchanged: int = 0
    moved: int = 0  # recognised by content after a move or rename: vector reused
    copied: int = 0  # new copies of indexed content: vector reused (counted in `added` too)
    failed: int = 0
    failed_before: int = 0  # known bad files, unchanged since they failed: not retried
    problems: list = field(default_factory=list)  # ScanProblem(path, reason): what couldn't be walked
    failures: list[tuple[bytes, str]] = field(default_factory=list)  # (path bytes, reason) of this run
    converted: int = 0  # vectors converted to another precision (`vectors=`) before the run
    crops: str = "centre"  # how the library cuts photos for the model (model/cut.py CROPS)
    recut: int = 0  # unchanged photos embedded again, cut the library's new way (in `updated`)


@dataclass(frozen=True)
class ParsedQuery:
    """How a text query was read (photosearch.negation): what is searched for, and the
    negated phrases subtracted from it the way `sub` terms are."""

    query: str  # as given
    positive: str  # the words searched for: `query` itself unless a negation was taken out
    negated: tuple[str, ...] = ()  # "a beach without people": ("people",)
    note: str | None = None  # why a query with negation words was searched as typed
    literal: bool = False  # reading negations was turned off (`literal=True`)

    @property
    def changed(self) -> bool:
        return bool(self.negated)


class Hits(list):
    """What `Library.search` returns: a list of Hit, in the order asked for (best first
    unless sorted otherwise), that also says how the query was read (`parsed`: a
    ParsedQuery for a text query, None for an image or a photo)."""

    def __init__(self, hits=(), parsed: ParsedQuery | None = None):
        super().__init__(hits)
        self.parsed = parsed
