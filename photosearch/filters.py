"""Narrowing a search: folder, glob, capture time, size. Turns `Filters` into the set of
library row ids a query may return; ranking then takes the top k *within* that set."""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from photosearch.errors import UsageError
from photosearch.store import Store


@dataclass(frozen=True)
class Filters:
    """Which photos a search, tagging or duplicate run may return. Every field narrows:

    in_dirs     folders (any of them); relative ones and `~` are made absolute
    globs       patterns (any of them): without a '/' for the file name ('*.png'), with one
                for the whole path ('*/2019/*'); case-insensitive
    since       taken on or after: '2019', '2019-06', '2019-06-03' or a full ISO time
    until       taken up to and including that period ('2019' includes all of 2019)
    min_width, min_height   at least that many pixels, upright

    Capture time is EXIF DateTimeOriginal, else the file's mtime. Bad dates raise UsageError
    when the Filters are made.
    """

    in_dirs: Sequence[str | os.PathLike] = ()
    globs: Sequence[str] = ()
    since: str | None = None
    until: str | None = None
    min_width: int | None = None
    min_height: int | None = None
    _folders: tuple[bytes, ...] = field(default=(), init=False, repr=False, compare=False)
    _since: str | None = field(default=None, init=False, repr=False, compare=False)
    _until: str | None = field(default=None, init=False, repr=False, compare=False)
    _also_under: tuple[bytes, ...] = field(default=(), init=False, repr=False, compare=False)  # see `within`

    def __post_init__(self) -> None:
        for name in ("in_dirs", "globs"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, (str, os.PathLike)) else tuple(value or ()))
        object.__setattr__(self, "_folders", _absolute(self.in_dirs))
        object.__setattr__(self, "_since", parse_time(self.since, end=False, flag="--since") if self.since else None)
        object.__setattr__(self, "_until", parse_time(self.until, end=True, flag="--until") if self.until else None)

    def active(self) -> bool:
        return bool(self.in_dirs or self.globs or self.since or self.until or self.min_width or self.min_height or self._also_under)

    def within(self, folders: Sequence[str | os.PathLike]) -> "Filters":
        """These filters, also limited to under `folders`: a photo must pass both (where
        `in_dirs` alone would let a photo under either through)."""
        narrowed = dataclasses.replace(self)
        object.__setattr__(narrowed, "_also_under", self._also_under + _absolute(folders))
        return narrowed


def _absolute(folders: Sequence[str | os.PathLike]) -> tuple[bytes, ...]:
    return tuple(os.fsencode(os.path.abspath(os.path.expanduser(os.fsdecode(f)))) for f in folders)


def parse_time(value: str, *, end: bool, flag: str) -> str:
    """`2021`, `2021-06`, `2021-06-03` or `2021-06-03T14:00[:00]` → an ISO bound.

    For --until a partial date means the end of that period (`--until 2021` includes all
    of 2021), so the bound returned is exclusive.
    """
    text = value.strip()
    try:
        if len(text) == 4 and text.isdigit():
            start = dt.datetime(int(text), 1, 1)
            stop = dt.datetime(int(text) + 1, 1, 1)
        elif len(text) == 7:
            start = dt.datetime.strptime(text, "%Y-%m")
            stop = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        elif len(text) == 10:
            start = dt.datetime.strptime(text, "%Y-%m-%d")
            stop = start + dt.timedelta(days=1)
        else:
            start = dt.datetime.fromisoformat(text).replace(tzinfo=None)
            stop = start + dt.timedelta(seconds=1)
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not a date", "use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS") from None
    return (stop if end else start).isoformat()


def _glob_matcher(patterns: Sequence[str]):
    """A pattern with a `/` matches the whole path, one without matches the file name."""
    compiled = [(("/" in p), fnmatch.translate(p)) for p in patterns]
    import re

    regexes = [(whole, re.compile(rx, re.IGNORECASE)) for whole, rx in compiled]

    def matches(raw: bytes) -> bool:
        path = raw.decode("utf-8", "surrogateescape")
        name = os.path.basename(path)
        return any(rx.match(path if whole else name) for whole, rx in regexes)

    return matches


def candidate_ids(store: Store, filters: Filters | None) -> np.ndarray | None:
    """Row ids that pass the filters, or None when nothing is filtered."""
    if filters is None or not filters.active():
        return None
    rows = store.ids_matching(
        under=filters._folders, since=filters._since, until=filters._until,
        min_width=filters.min_width, min_height=filters.min_height,
    )  # fmt: skip
    if filters.globs:
        matches = _glob_matcher(filters.globs)
        rows = ((row_id, path) for row_id, path in rows if matches(path))
    ids = [row_id for row_id, _ in rows]
    if filters._also_under:
        under = {row_id for row_id, _ in store.ids_matching(under=filters._also_under)}
        ids = [i for i in ids if i in under]
    return np.asarray(ids, dtype=np.int64)
