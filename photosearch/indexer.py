"""scan -> diff against the library -> decode -> encode -> store -> FAISS.

`index_folders` does the whole job and reports what happens through a callback of
`IndexEvent`s; it never prints. Photos are committed in batches, so an interrupted run
keeps what it finished and the next run picks up the rest.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from photosearch import library, vectors
from photosearch.config import DEFAULT_BATCH_SIZE, ModelSpec
from photosearch.decode import DecodedPhoto, decode, mtime_as_taken_at
from photosearch.errors import DecodeError, WeightsUnavailableError
from photosearch.scan import PhotoFile, ScanProblem, scan
from photosearch.store import PhotoRow, Store
from photosearch.weights import ResolvedModel, resolve


@dataclass
class IndexEvent:
    kind: str  # 'problem' | 'skipped' | 'planned' | 'model' | 'progress' | 'saving'
    path: bytes | None = None
    reason: str | None = None
    total: int = 0
    done: int = 0


@dataclass
class IndexSummary:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    failed_before: int = 0  # known bad files, unchanged since they failed: not retried
    problems: list[ScanProblem] = field(default_factory=list)
    failures: list[tuple[bytes, str]] = field(default_factory=list)


def _under(path: bytes, root: bytes) -> bool:
    return path == root or path.startswith(root.rstrip(b"/") + b"/")


def index_folders(
    store: Store,
    roots: Iterable[bytes],
    *,
    requested_model: ModelSpec | None = None,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    include_hidden: bool = False,
    follow_symlinks: bool = False,
    on_event: Callable[[IndexEvent], None] = lambda event: None,
) -> IndexSummary:
    roots = [os.path.abspath(r) for r in roots]
    spec = library.choose_spec(store, requested_model)
    summary = IndexSummary()
    # Find the weights before the walk, so a first run without them fails at once. A library
    # that already has photos can still drop vanished ones without its weights at hand.
    weights_error: WeightsUnavailableError | None = None
    resolved = None
    try:
        resolved = resolve(spec)
    except WeightsUnavailableError as exc:
        if store.count() == 0:
            raise
        weights_error = exc

    seen: set[bytes] = set()
    todo: list[tuple[PhotoFile, bool]] = []  # (file, already in library)
    known = store.known_files()
    known_failed = store.known_failures()
    for item in scan(roots, include_hidden=include_hidden, follow_symlinks=follow_symlinks):
        if isinstance(item, ScanProblem):
            summary.problems.append(item)
            on_event(IndexEvent("problem", item.path, item.reason))
            continue
        seen.add(item.path)
        stamp = (item.size, item.mtime_ns)
        if known.get(item.path) == stamp:
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

    on_event(IndexEvent("planned", total=len(todo)))
    if todo:
        if resolved is None:
            raise weights_error  # type: ignore[misc]
        _encode_and_store(store, resolved, todo, device, batch_size, summary, on_event)
    if vanished:
        summary.removed = store.remove(vanished)

    on_event(IndexEvent("saving"))
    generation = store.generation()
    vectors.save(store, vectors.build(store), generation)
    return summary


def _encode_and_store(
    store: Store,
    resolved: ResolvedModel,
    todo: list[tuple[PhotoFile, bool]],
    device: str,
    batch_size: int,
    summary: IndexSummary,
    on_event: Callable[[IndexEvent], None],
) -> None:
    from photosearch.encode import Encoder

    spec = resolved.spec
    on_event(IndexEvent("model", reason=spec.label()))
    encoder = Encoder(resolved, device)
    fingerprint = resolved.fingerprint()
    probe = encoder.encode_texts(["a photo"])
    library.check_loaded(store, spec, fingerprint, probe.shape[1])
    library.bind(store, spec, fingerprint, probe.shape[1], encoder.logit_scale)

    done = 0
    for batch in _batches(_decoded(todo, encoder), batch_size):
        ok = [(f, existed, photo, pixels) for f, existed, photo, pixels, _ in batch if photo is not None]
        failed = [(f.path, f.size, f.mtime_ns, reason) for f, _, photo, _, reason in batch if photo is None]
        rows: list[PhotoRow] = []
        if ok:
            embeddings = encoder.encode_images([pixels for *_, pixels in ok])
            for (f, existed, photo, _), vector in zip(ok, embeddings, strict=True):
                taken_at, source = (photo.taken_at, "exif") if photo.taken_at else (mtime_as_taken_at(f.mtime_ns), "mtime")
                rows.append(PhotoRow(f.path, f.size, f.mtime_ns, photo.width, photo.height, taken_at, source, vector))
                if existed:
                    summary.updated += 1
                else:
                    summary.added += 1
        store.write_batch(rows, failed)
        for path, _, _, reason in failed:
            summary.failed += 1
            summary.failures.append((path, reason))
            on_event(IndexEvent("skipped", path, reason))
        done += len(batch)
        on_event(IndexEvent("progress", done=done, total=len(todo)))


def _decoded(todo: list[tuple[PhotoFile, bool]], encoder) -> Iterator[tuple]:
    """Decode and preprocess ahead of the encoder, in threads (Pillow releases the GIL).

    Yields (file, existed, DecodedPhoto, pixels, None) or (file, existed, None, None, reason),
    in the order of `todo`.
    """

    def work(f: PhotoFile):
        try:
            photo = decode(f.path, encoder.image_size)
            return photo, encoder.preprocess(photo.image)
        except DecodeError as exc:
            return exc.reason, None

    workers = max(1, min(4, os.cpu_count() or 1))
    window = workers * 8
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque[tuple[PhotoFile, bool, Future]] = deque()
        items = iter(todo)
        for f, existed in items:
            pending.append((f, existed, pool.submit(work, f)))
            if len(pending) >= window:
                break
        while pending:
            f, existed, future = pending.popleft()
            result, pixels = future.result()
            nxt = next(items, None)
            if nxt is not None:
                pending.append((nxt[0], nxt[1], pool.submit(work, nxt[0])))
            if isinstance(result, DecodedPhoto):
                yield f, existed, result, pixels, None
            else:
                yield f, existed, None, None, result


def _batches(items: Iterator[tuple], size: int) -> Iterator[list[tuple]]:
    batch: list[tuple] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
