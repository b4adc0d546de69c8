"""Keep a library current from file system events (`Library.watch`, `photosearch watch`).

Events come from watchdog (inotify, FSEvents, ReadDirectoryChangesW) in its own thread;
this module only collects them, waits for quiet, and tells its caller when a batch is due.
It never touches the library itself: each batch is one ordinary index pass of the watched
folders, run by the caller, so ignore rules, hidden files, symlinks, moves (recognised by
content) and deletions behave exactly as in `photosearch index`. On an unchanged library
such a pass costs a walk of the folders and no model.

A file that is still being written is left out of a batch ("unfinished") until it is done:
where the platform reports closes (inotify's IN_CLOSE_WRITE), until the writer closes it;
everywhere, until its modification time is older than the quiet period.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from photosearch.scan import is_photo_name

DEFAULT_DEBOUNCE_S = 1.5  # quiet after the last event before a batch runs
DEFAULT_MAX_DELAY_S = 30.0  # a constant trickle of events still gets a batch this often
# A file opened for writing whose writer went silent this long without closing it is
# indexed anyway (a writer that hangs, or a platform that lost the close event).
STALE_WRITE_S = 600.0
IGNORE_FILE = b".photosearchignore"


@dataclass
class WatchBatch:
    """One index pass of `Library.watch`: what it did, how long it took, whether it was the
    catch-up pass at the start, and how many files it left for later (still being written)."""

    summary: Any  # IndexSummary
    seconds: float
    catch_up: bool
    unfinished: int = 0


@dataclass
class Batch:
    """What a batch is about: the paths that changed (for the record; a batch indexes the
    watched folders whole) and the files still being written, to be left alone this time."""

    changed: set[bytes] = field(default_factory=set)
    unfinished: set[bytes] = field(default_factory=set)


class ChangeCollector:
    """Collects relevant events from watchdog's thread; `next_batch` waits for quiet.

    Only what can change the library counts: photo files created, modified, closed after
    writing, moved or deleted; folders created, moved or deleted; ignore files. Opens and
    read-only closes don't (our own index pass reads the photos it encodes)."""

    def __init__(
        self,
        debounce_s: float = DEFAULT_DEBOUNCE_S,
        max_delay_s: float = DEFAULT_MAX_DELAY_S,
        *,
        closes_reported: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.debounce_s = debounce_s
        self.max_delay_s = max(max_delay_s, debounce_s)
        self._clock = clock
        self._cond = threading.Condition()
        self._changed: set[bytes] = set()
        self._first_at: float | None = None
        self._last_at = 0.0
        self._writing: dict[bytes, float] = {}  # files written to and not closed yet → last write
        self.closes_reported = closes_reported  # the platform tells us when a writer closes a file
        self._stopped = False

    # -- watchdog's thread ----------------------------------------------------------------
    def dispatch(self, event) -> None:
        """watchdog's handler entry point (an observer calls it for every event)."""
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        paths = [_raw(event.src_path)] + (
            [_raw(event.dest_path)] if getattr(event, "dest_path", "") else []
        )
        if event.is_directory:
            if kind not in ("created", "deleted", "moved"):
                return
        elif not any(_matters(p) for p in paths):
            return
        now = self._clock()
        with self._cond:
            if kind == "closed":
                self._writing.pop(paths[0], None)
            elif kind == "modified" and not event.is_directory and self.closes_reported:
                self._writing[paths[0]] = now
            elif kind in ("deleted", "moved"):
                self._writing.pop(paths[0], None)
            self._changed.update(paths)
            if self._first_at is None:
                self._first_at = now
            self._last_at = now
            self._cond.notify_all()

    # -- the caller's thread --------------------------------------------------------------
    def next_batch(self, timeout: float | None = None) -> Batch | None:
        """Wait until events have been quiet for the debounce period (or have kept coming
        for the maximum delay), then return the batch; None if `timeout` passes first or
        the collector is stopped."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._stopped:
                now = self._clock()
                due = None
                if self._first_at is not None:
                    due = min(self._last_at + self.debounce_s, self._first_at + self.max_delay_s)
                    if now >= due:
                        batch = self._take(now)
                        if batch is not None:
                            return batch
                        due = now + self.debounce_s  # only unfinished files: look again later
                if deadline is not None and now >= deadline:
                    return None
                wake = min(d for d in (due, deadline, now + 0.5) if d is not None)
                # At most half a second at a time: a signal handler runs only between waits.
                self._cond.wait(max(0.0, wake - now))
            return None

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _take(self, now: float) -> Batch | None:
        """The pending batch, less the files still being written (kept pending)."""
        unfinished = {p for p, at in self._writing.items() if now - at < STALE_WRITE_S}
        for stale in set(self._writing) - unfinished:
            del self._writing[stale]
        if not self.closes_reported:
            unfinished |= {p for p in self._changed if _written_within(p, self.debounce_s)}
        settled = self._changed - unfinished
        if not settled:
            # Nothing but unfinished files: no batch yet. They are looked at again after
            # the next event, or a quiet period from now.
            self._first_at, self._last_at = now, now
            return None
        self._changed = set(unfinished)
        self._first_at = now if unfinished else None
        self._last_at = now
        return Batch(settled, unfinished)


def _raw(path) -> bytes:
    return os.fsencode(path)


def _matters(path: bytes) -> bool:
    name = os.path.basename(path)
    return is_photo_name(name) or name == IGNORE_FILE


def _written_within(path: bytes, seconds: float) -> bool:
    """Whether the file was modified in the last `seconds` (the stability check where the
    platform doesn't report closes)."""
    try:
        return time.time() - os.stat(path).st_mtime < seconds
    except OSError:
        return False


def run(
    roots: Sequence[bytes],
    index_pass: Callable[[Batch | None], None],
    *,
    debounce_s: float = DEFAULT_DEBOUNCE_S,
    max_delay_s: float = DEFAULT_MAX_DELAY_S,
    stop: threading.Event | None = None,
    recursive: bool = True,
) -> None:
    """Watch `roots`, call `index_pass(None)` once to catch up, then `index_pass(batch)` for
    every batch of changes, until `stop` is set (or KeyboardInterrupt). The observer starts
    before the catch-up pass, so nothing that changes during it is missed."""
    from watchdog.observers import Observer

    observer = Observer()
    # Only inotify reports a writer's close; elsewhere the modification time must settle.
    collector = ChangeCollector(
        debounce_s, max_delay_s, closes_reported="inotify" in type(observer).__module__
    )
    for root in roots:
        observer.schedule(collector, os.fsdecode(root), recursive=recursive)
    observer.start()
    try:
        index_pass(None)
        while stop is None or not stop.is_set():
            batch = collector.next_batch(timeout=0.5)
            if batch is not None:
                index_pass(batch)
    finally:
        collector.stop()
        observer.stop()
        observer.join(timeout=5)
