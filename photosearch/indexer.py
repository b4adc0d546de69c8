"""scan -> diff against the library -> decode -> encode -> store -> FAISS.

`index_folders` does the whole job and reports what happens through a callback of
`IndexEvent`s; it never prints. Photos are committed in batches, so an interrupted run
keeps what it finished and the next run picks up the rest.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
from collections import deque
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from photosearch import binding, model, vectors, workers
from photosearch.config import DEFAULT_BATCH_SIZE, ModelSpec
from photosearch.decode import DEFAULT_MAX_PIXELS, mtime_as_taken_at
from photosearch.errors import WeightsUnavailableError
from photosearch.ignore import IgnoreRules
from photosearch.model import ResolvedModel
from photosearch.model.cut import CROPS, DEFAULT_CROPS, TILE_SLACK, photo_vectors
from photosearch.results import IndexEvent, IndexSummary
from photosearch.scan import (
    DEFAULT_RAW_PAIRS,
    PhotoFile,
    ScanProblem,
    choose_raw_pairs,
    content_fingerprint,
    scan,
)
from photosearch.store import PhotoRow, Store
from photosearch.workers import DEFAULT_TIMEOUT_S, Prepare, Prepared, prepare_one


def _under(path: bytes, root: bytes) -> bool:
    return path == root or path.startswith(root.rstrip(b"/") + b"/")


def index_folders(
    store: Store,
    roots: Iterable[bytes],
    *,
    requested_model: ModelSpec | None = None,
    device: str = "auto",
    precision: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    include_hidden: bool = False,
    follow_symlinks: bool = False,
    rules: IgnoreRules | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    decode_timeout: float = DEFAULT_TIMEOUT_S,
    prepare_job: Callable[[tuple], Prepared] = prepare_one,
    thumbnails: Path | None = None,
    raw_pairs: str = DEFAULT_RAW_PAIRS,  # which of a RAW+JPEG pair: scan.choose_raw_pairs
    on_event: Callable[[IndexEvent], None] = lambda event: None,
    unfinished: Collection[bytes] = frozenset(),
    crops: str | None = None,
    pipeline=None,  # where the per-photo work runs instead of here: photosearch/cluster/ (--ray)
    encoders: model.KeptEncoders | None = None,  # keeps the image encoder loaded between calls
) -> IndexSummary:
    """Index photos under `roots` into `store`. Files in `unfinished` (still being written)
    are left as the library has them: neither indexed nor dropped. `prepare_job` is the decode workers' job
    (a module-level function; tests swap in one that misbehaves). With `thumbnails` (a
    folder), every photo under `roots` gets a thumbnail there: the decode workers make them
    of the photos they encode, and a second pass of the unchanged ones that lack one.
    `rules` (default: `IgnoreRules()`) say what the walk leaves out; photos of the library
    they exclude are removed like vanished ones, and counted in `summary.excluded` too.
    `crops` (model/cut.py CROPS) changes how the library cuts photos for the model; the
    library's photos cut otherwise are embedded again (and an interrupted run's successor
    goes on with it). None: as the library does, or the default for a new library and one
    from before there was a choice."""
    roots = [os.path.abspath(r) for r in roots]
    rules = IgnoreRules() if rules is None else rules
    spec = binding.choose_spec(store, requested_model)
    summary = IndexSummary()
    # Find the weights before the walk, so a first run without them fails at once. A library
    # that already has photos can still drop vanished ones without its weights at hand.
    weights_error: WeightsUnavailableError | None = None
    resolved = None
    try:
        resolved = model.resolve(spec)
    except WeightsUnavailableError as exc:
        if store.count() == 0:
            raise
        weights_error = exc

    summary.crops = _choose_crops(store, crops, resolved)
    recut = store.cut_otherwise(summary.crops, TILE_SLACK) if store.count() else set()

    seen: set[bytes] = set()
    todo: list[tuple[PhotoFile, bool]] = []  # (file, already in library)
    known = store.known_files()
    known_failed = store.known_failures()
    for item in choose_raw_pairs(scan(roots, include_hidden=include_hidden, follow_symlinks=follow_symlinks, rules=rules), raw_pairs):
        if isinstance(item, ScanProblem):
            summary.problems.append(item)
            on_event(IndexEvent("problem", item.path, item.reason))
            continue
        seen.add(item.path)
        if item.path in unfinished:
            continue
        stamp = (item.size, item.mtime_ns)
        if known.get(item.path) == stamp and item.path in recut:
            todo.append((item, True))
            summary.recut += 1
        elif known.get(item.path) == stamp:
            summary.unchanged += 1
        elif known_failed.get(item.path) == stamp:
            summary.failed_before += 1
        else:
            todo.append((item, item.path in known))

    # A folder we couldn't read may still hold its photos: never treat them as deleted.
    unreadable = [p.path for p in summary.problems]
    vanished = [
        path
        for path in list(known) + list(known_failed)
        if path not in seen
        and any(_under(path, root) for root in roots)
        and not any(_under(path, bad) for bad in unreadable)
    ]

    todo, vanished, fingerprints = _reuse_known_content(store, todo, vanished, summary)
    if thumbnails is not None:
        thumbnails = _usable_thumbnails_folder(thumbnails, on_event)

    if summary.recut:
        on_event(IndexEvent("recut", reason=summary.crops, total=summary.recut))
    on_event(IndexEvent("planned", total=len(todo)))
    if todo and resolved is None:
        raise weights_error  # type: ignore[misc]
    store.set_crops(summary.crops)  # before any photo is cut the new way: a successor goes on
    if todo:
        how = _Work(device, precision, batch_size, max_pixels, decode_timeout, prepare_job, str(thumbnails) if thumbnails else None)
        how.pipeline = pipeline
        how.encoders = encoders
        _encode_and_store(store, resolved, todo, fingerprints, how, summary, on_event)
    if vanished:
        # Only to say why: an excluded photo is dropped the same way as a deleted one.
        summary.excluded = sum(1 for path in vanished if path in known and _excluded(rules, roots, path))
        summary.removed = store.remove(vanished)

    on_event(IndexEvent("saving"))
    vectors.remove_leftovers(store.path)
    vectors.refresh(store)  # catches the search index up on this run's changes; none: untouched
    if thumbnails is not None:
        # Last: the library and its search index are whole before this (possibly long) pass.
        done_here = {f.path for f, _ in todo} | set(unfinished)
        _fill_thumbnails(store, thumbnails, seen - done_here, max_pixels, decode_timeout, on_event)
    return summary


def _choose_crops(store: Store, requested: str | None, resolved: ResolvedModel | None) -> str:
    """How this run cuts photos: as asked, else as the library does, else the default. The
    default quietly stays the centre square for a model whose input photosearch doesn't cut
    itself; asking for another way with such a model is an error (model/cut.py)."""
    if requested is not None and requested not in CROPS:
        from photosearch.errors import UsageError

        raise UsageError(f"unknown --crops {requested!r}", "use " + ", ".join(CROPS))
    crops = requested or store.meta().get("crops") or DEFAULT_CROPS
    if resolved is not None and crops != "centre":
        cut = model.cut_of(resolved)
        if not cut.crop and requested is None:
            return "centre"
        cut.with_crops(crops)  # raises for a model it can't cut that way
    return crops


def _excluded(rules: IgnoreRules, roots: list[bytes], path: bytes) -> bool:
    """Whether the ignore rules exclude `path` (or a folder above it) under its indexed root."""
    root = max((r for r in roots if _under(path, r) and r != path), key=len, default=None)
    return root is not None and rules.excluded_below(root, path)


@dataclass
class _Work:
    device: str
    precision: str | None
    batch_size: int
    max_pixels: int | None
    decode_timeout: float
    prepare_job: Callable[[tuple], Prepared]
    thumbnails: str | None = None  # the folder the decode workers write thumbnails to
    pipeline: object = None  # photosearch/cluster/'s RayPipeline: the work runs on a cluster
    encoders: model.KeptEncoders | None = None  # a long-running caller's loaded encoder


def _usable_thumbnails_folder(folder: Path, on_event: Callable[[IndexEvent], None]) -> Path | None:
    """The thumbnails folder, or None (with a warning) if it can't be written: thumbnails are
    a cache, and the run goes on without them."""
    from photosearch import thumbnails
    from photosearch.errors import LibraryError

    try:
        return thumbnails.check_writable(folder)
    except LibraryError as exc:
        on_event(IndexEvent("warning", reason=f"no thumbnails this run: {exc.one_line()}"))
        return None


def _fill_thumbnails(
    store: Store,
    folder: Path,
    candidates: set[bytes],
    max_pixels: int | None,
    timeout_s: float,
    on_event: Callable[[IndexEvent], None],
) -> None:
    """Thumbnails for the photos among `candidates` (indexed before, unchanged) that have
    none, made from their files in the decode workers, with the same time limit per file. A
    photo whose thumbnail fails is reported ('thumbnail-failed'), not recorded as a failure."""
    from photosearch import thumbnails

    if not candidates:
        return
    have = thumbnails.present(folder)
    missing: list[tuple[PhotoFile, bool]] = []
    fingerprints: dict[bytes, str | None] = {}
    for row_id, path, size, mtime_ns, fingerprint in store.all_file_facts():
        if path in candidates and thumbnails.cached_name(thumbnails.FileFacts(row_id, path, size, mtime_ns, fingerprint)) not in have:
            missing.append((PhotoFile(path, size, mtime_ns), True))
            fingerprints[path] = fingerprint
    if not missing:
        return
    on_event(IndexEvent("thumbnails", total=len(missing)))
    how = Prepare(size=thumbnails.SIZE // 2, max_pixels=max_pixels, thumbnails=str(folder))
    for done, item in enumerate(workers.prepared(missing, how, fingerprints, timeout_s=timeout_s, job=workers.thumbnail_one), 1):
        reason = item.reason or item.thumbnail_error
        if reason:
            on_event(IndexEvent("thumbnail-failed", item.file.path, reason))
        on_event(IndexEvent("thumbnails", done=done, total=len(missing)))


def _fingerprint(path: bytes) -> str | None:
    try:
        return content_fingerprint(path)
    except OSError:
        return None


def _reuse_known_content(
    store: Store,
    todo: list[tuple[PhotoFile, bool]],
    vanished: list[bytes],
    summary: IndexSummary,
) -> tuple[list[tuple[PhotoFile, bool]], list[bytes], dict[bytes, str | None]]:
    """New paths whose content the library already has get that vector without the model:
    a move or rename updates the vanished row's path; a copy gets a row of its own."""
    new = [f for f, existed in todo if not existed]
    if not new or store.count() == 0:
        return todo, vanished, {}
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="fingerprint") as pool:
        fingerprints = dict(zip((f.path for f in new), pool.map(_fingerprint, (f.path for f in new)), strict=True))
    known = store.rows_by_fingerprint(fp for fp in fingerprints.values() if fp)
    gone = set(vanished)
    moved_rows: set[int] = set()
    moves, copies, reused = [], [], set()
    for f in new:
        match = known.get(fingerprints[f.path] or "")
        if match is None:
            continue
        row_id, old_path = match
        if old_path in gone and row_id not in moved_rows:
            moves.append((row_id, f.path, f.size, f.mtime_ns))
            moved_rows.add(row_id)
            gone.discard(old_path)
        else:
            copies.append((row_id, f.path, f.size, f.mtime_ns))
        reused.add(f.path)
    store.reuse(moves, copies)
    summary.moved += len(moves)
    summary.copied += len(copies)
    summary.added += len(copies)
    remaining = [(f, existed) for f, existed in todo if f.path not in reused]
    return remaining, [p for p in vanished if p in gone], fingerprints


def _encode_and_store(
    store: Store,
    resolved: ResolvedModel,
    todo: list[tuple[PhotoFile, bool]],
    fingerprints: dict[bytes, str | None],
    work: _Work,
    summary: IndexSummary,
    on_event: Callable[[IndexEvent], None],
) -> None:
    """Decode in worker processes while the model loads in a thread (importing torch and
    reading the weights takes seconds the workers spend decoding), then encode and store."""
    binding.check_weights(store, resolved)  # before any work
    how = Prepare.of(model.cut_of(resolved).with_crops(summary.crops), work.max_pixels, work.thumbnails)  # known without torch
    on_event(IndexEvent("model", reason=resolved.spec.label()))
    if work.pipeline is not None:
        return _store_from_pipeline(store, resolved, todo, fingerprints, work, summary, on_event, how)
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
    load = work.encoders.image_encoder if work.encoders is not None else model.load_image_encoder
    loading = loader.submit(load, resolved, work.device, work.precision, photos=len(todo))
    loader.shutdown(wait=False)
    run = _Run(store, todo, fingerprints, work, summary, on_event, loading, resolved, summary.crops)
    try:
        run.encode_all(how)
    finally:
        if not loading.cancel():
            try:
                loading.result()  # never leave a thread loading a model behind us
            except Exception:
                pass
    # So cold text queries needn't import torch: for the numpy tower that is a recipe written
    # in milliseconds (a pickled or half-precision checkpoint: its text tensors copied once
    # as float32, well under a second); only a design numpy doesn't cover is exported to
    # ONNX, from the fp32 weights, which is the run's memory peak.
    if not model.ensure_text_tower(resolved, export=False):
        del run, loading  # one model in memory at a time
        gc.collect()
        _return_freed_memory()  # the export is the run's peak: start it from a low floor
        model.ensure_text_tower(resolved)


def _return_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc keeps them per thread arena:
    ~250 MB after encoding here). Elsewhere this is a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass
class _Run:
    store: Store
    todo: list[tuple[PhotoFile, bool]]
    fingerprints: dict[bytes, str | None]
    work: _Work
    summary: IndexSummary
    on_event: Callable[[IndexEvent], None]
    loading: Future
    resolved: ResolvedModel
    crops: str = "centre"
    done: int = 0

    def encode_all(self, how: Prepare) -> None:
        """Decode with `how` and encode everything. Batches are encoded in threads (as many
        at once as the encoder says) and written here, in order, one transaction each."""
        work, encoder, threads, at_once, size = self.work, None, None, 1, self.work.batch_size
        # Decoded photos wait ahead of the model, a batch's worth: when one thread's batch is
        # done the next is ready, and decoding goes on while the main thread waits for vectors
        # (1080p: ~5% more photos/s than 8 ahead, about the size of this machine's noise).
        photos = workers.prepared(self.todo, how, self.fingerprints, timeout_s=work.decode_timeout, job=work.prepare_job,
                                  ahead=work.batch_size)
        buffered: list[Prepared] = []
        encoding: deque[tuple[list[Prepared], Future]] = deque()
        limit = max(4 * work.batch_size, 64)  # decoded photos held while the model loads
        setup, finished = contextlib.ExitStack(), False
        try:
            for item in itertools.chain(photos, [None]):
                if item is not None:
                    buffered.append(item)
                if encoder is None and (item is None or self.loading.done() or len(buffered) >= limit):
                    encoder = self.loading.result()
                    binding.check_loaded(self.store, self.resolved, encoder.dim)
                    binding.bind(self.store, self.resolved, encoder.dim, encoder.logit_scale)
                    at_once = setup.enter_context(encoder.batches_in_parallel())
                    threads = ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="encode")
                    size = -(-work.batch_size // at_once)  # `batch_size` photos in the model at once
                    # An encoder on one thread a batch (ONNX Runtime's) takes small batches,
                    # or the photos decoded while it loaded would all land on one thread.
                    size = min(size, getattr(encoder, "batch_limit", None) or size)
                if encoder is None:
                    continue
                if item is None:  # the last photos: shared between the threads, none left alone
                    size = max(1, min(size, -(-len(buffered) // at_once)))
                while buffered and (len(buffered) >= size or item is None):
                    batch, buffered = buffered[:size], buffered[size:]
                    if len(encoding) >= at_once:
                        self._store_next(encoding)
                    encoding.append((batch, threads.submit(_encode, encoder, batch, self.crops)))
            while encoding:
                self._store_next(encoding)
            finished = True
        finally:
            photos.close()
            if threads is not None:
                # Interrupted or failed: don't wait for batches that won't be stored (with a
                # large model, a batch on one thread takes many seconds).
                threads.shutdown(wait=finished, cancel_futures=True)
            setup.close()  # gives torch its threads back

    def _store_next(self, encoding: deque[tuple[list[Prepared], Future]]) -> None:
        batch, pending = encoding.popleft()
        self._store(batch, pending.result())

    def _store(self, batch: list[Prepared], encoded: list[tuple[np.ndarray, np.ndarray | None]]) -> None:
        """One batch's rows (their vectors and tiles, in `batch`'s order), one transaction."""
        ok = [item for item in batch if item.photo is not None]
        failed = [(i.file.path, i.file.size, i.file.mtime_ns, i.reason) for i in batch if i.photo is None]
        rows: list[PhotoRow] = []
        for item, (vector, tiles) in zip(ok, encoded, strict=True):
            f, photo = item.file, item.photo
            taken_at, source = (photo.taken_at, "exif") if photo.taken_at else (mtime_as_taken_at(f.mtime_ns), "mtime")
            rows.append(PhotoRow(f.path, f.size, f.mtime_ns, photo.width, photo.height, taken_at, source, vector,
                                 item.fingerprint, self.crops, tiles))  # fmt: skip
            if item.existed:
                self.summary.updated += 1
            else:
                self.summary.added += 1
        self.store.write_batch(rows, failed)
        for item in ok:
            if item.thumbnail_error:  # the photo is indexed; only its thumbnail is missing
                self.on_event(IndexEvent("thumbnail-failed", item.file.path, item.thumbnail_error))
        for path, _, _, reason in failed:
            self.summary.failed += 1
            self.summary.failures.append((path, reason))
            self.on_event(IndexEvent("skipped", path, reason))
        self.done += len(batch)
        self.on_event(IndexEvent("progress", done=self.done, total=len(self.todo)))


def _encode(encoder, batch: list[Prepared], crops: str) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(vector, tiles' vectors or None) of each of a batch's decoded photos: all their
    tiles go through the model together (model/cut.py)."""
    ok = [item for item in batch if item.photo is not None]
    if not ok:
        return []
    if not all(isinstance(item.pixels, list) for item in ok):  # pictures for the encoder's own transform
        return [(v, None) for v in encoder.encode_prepared([item.pixels for item in ok])]
    counts = [len(item.pixels) for item in ok]
    flat = encoder.encode_prepared([tile for item in ok for tile in item.pixels])
    return [photo_vectors(v, crops) for v in np.split(flat, np.cumsum(counts)[:-1])]


def _store_from_pipeline(store: Store, resolved: ResolvedModel, todo: list[tuple[PhotoFile, bool]],
                         fingerprints: dict[bytes, str | None], work: _Work, summary: IndexSummary,
                         on_event: Callable[[IndexEvent], None], how: Prepare) -> None:
    """The per-photo work done by `work.pipeline` (photosearch/cluster/: decode tasks and
    model actors on a Ray cluster), stored by `_Run._store` as the local path stores its own:
    in the order of `todo`, one transaction a batch, failures recorded and reported."""
    run = _Run(store, todo, fingerprints, work, summary, on_event, None, resolved, summary.crops)  # type: ignore[arg-type]
    with work.pipeline.start(resolved, how, work, todo, on_event) as remote:  # type: ignore[attr-defined]
        binding.check_loaded(store, resolved, remote.dim)
        binding.bind(store, resolved, remote.dim, remote.logit_scale)
        for batch, vectors_of_batch in remote.results(todo, fingerprints):
            run._store(batch, vectors_of_batch)
    model.ensure_text_tower(resolved)  # this machine has the weights: it resolved them
