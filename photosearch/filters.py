"""Narrowing a search: folder, glob, capture time, size. Turns options into the set of
library row ids a query may return; ranking then takes the top k *within* that set."""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from photosearch.errors import UsageError
from photosearch.store import Store


@dataclass
class Filters:
    in_dirs: Sequence[bytes] = field(default_factory=list)  # absolute folder paths
    globs: Sequence[str] = field(default_factory=list)
    since: str | None = None  # ISO 8601, inclusive
    until: str | None = None  # ISO 8601, exclusive (a bare date means "through that day")
    min_width: int | None = None
    min_height: int | None = None

    def active(self) -> bool:
        return bool(self.in_dirs or self.globs or self.since or self.until or self.min_width or self.min_height)


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


def make_filters(
    in_dirs: Sequence[str] | None = None,
    globs: Sequence[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    min_width: int | None = None,
    min_height: int | None = None,
) -> Filters:
    return Filters(
        in_dirs=[os.fsencode(os.path.abspath(os.path.expanduser(d))) for d in in_dirs or []],
        globs=list(globs or []),
        since=parse_time(since, end=False, flag="--since") if since else None,
        until=parse_time(until, end=True, flag="--until") if until else None,
        min_width=min_width,
        min_height=min_height,
    )


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


def candidate_ids(store: Store, filters: Filters) -> np.ndarray | None:
    """Row ids that pass the filters, or None when nothing is filtered."""
    if not filters.active():
        return None
    where, params = [], []
    if filters.in_dirs:
        ors = []
        for folder in filters.in_dirs:
            prefix = folder.rstrip(b"/") + b"/"
            # Byte-wise range: every path that starts with `prefix` sorts in [prefix, prefix+1).
            ors.append("(path >= ? AND path < ?)")
            params += [prefix, prefix[:-1] + b"0"]  # '0' is the byte after '/'
        where.append("(" + " OR ".join(ors) + ")")
    if filters.since:
        where.append("taken_at >= ?")
        params.append(filters.since)
    if filters.until:
        where.append("taken_at < ?")
        params.append(filters.until)
    if filters.min_width:
        where.append("width >= ?")
        params.append(filters.min_width)
    if filters.min_height:
        where.append("height >= ?")
        params.append(filters.min_height)
    sql = "SELECT id, path FROM photos" + (" WHERE " + " AND ".join(where) if where else "")
    rows = store.conn.execute(sql, params)
    if filters.globs:
        matches = _glob_matcher(filters.globs)
        ids = [row_id for row_id, path in rows if matches(path)]
    else:
        ids = [row_id for row_id, _ in rows]
    return np.asarray(ids, dtype=np.int64)
