"""Decode photos in worker processes, ahead of the encoder, with a time limit per file.

Why processes: JPEG entropy decoding is most of the CPU cost of indexing, and a thread
can't be stopped when a hostile file makes a decoder spin. Worker processes decode,
fingerprint, resize and crop to the model's input (with Pillow only, no torch: see
model/cut.py), and send back small uint8 arrays; the encoder normalises them. A file that
takes longer than the limit is recorded as failed and its worker pool is replaced; the run
goes on.
"""

from __future__ import annotations

import gc
import multiprocessing
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from photosearch.config import usable_cpus
from photosearch.decode import DecodedPhoto, decode
from photosearch.errors import DecodeError
from photosearch.model.cut import Cut, model_inputs
from photosearch.scan import PhotoFile, content_fingerprint

DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Prepare:
    """How to turn a decoded photo into model input (picklable, sent to the workers)."""

    size: int  # the model's square input side
    interpolation: str = "bicubic"  # 'bicubic' or 'bilinear'
    crop: bool = True  # False: send the decoded picture; the encoder's own transform applies
    max_pixels: int | None = None
    # Where the workers write thumbnails of what they decode (None: they don't). A path, not
    # looked up in the worker: a forkserver's children see the environment it started with.
    thumbnails: str | None = None
    crops: str = "centre"  # how much of the frame the model sees (model/cut.py CROPS)
    fill: tuple[int, int, int] = (0, 0, 0)

    @classmethod
    def of(cls, cut: Cut, max_pixels: int | None, thumbnails: str | None = None) -> "Prepare":
        return cls(size=cut.size, interpolation=cut.interpolation, crop=cut.crop, max_pixels=max_pixels,
                   thumbnails=thumbnails, crops=cut.crops, fill=cut.fill)  # fmt: skip

    def cut(self) -> Cut:
        return Cut(self.size, self.interpolation, self.crop, self.crops, self.fill)

    def decode_side(self) -> int:
        """The short side to decode to: the model's input, or what a thumbnail needs if that
        is more. For the usual inputs (224 px and up) it is the model's input anyway, so the
        decode, and the embedding, are the same with thumbnails as without."""
        from photosearch.thumbnails import SIZE

        return max(self.size, SIZE // 2) if self.thumbnails else self.size


@dataclass
class Prepared:
    file: PhotoFile
    existed: bool
    photo: DecodedPhoto | None = None  # metadata; `image` is dropped after preparation
    # The model's inputs: (size, size, 3) uint8 arrays, one a tile (model/cut.py), or the
    # decoded picture for the encoder's own transform.
    pixels: list[np.ndarray] | Image.Image | None = None
    reason: str | None = None
    fingerprint: str | None = None
    thumbnail_error: str | None = None  # the photo is fine, its thumbnail couldn't be made


def prepare_one(job: tuple[PhotoFile, bool, Prepare, str | None]) -> Prepared:
    """The worker's job: decode, fingerprint, cut to model input, and write the thumbnail
    when `how.thumbnails` says where. Never raises."""
    file, existed, how, fingerprint = job
    try:
        photo = decode(file.path, how.decode_side(), max_pixels=how.max_pixels)
    except DecodeError as exc:
        return Prepared(file, existed, reason=exc.reason)
    except Exception as exc:  # a bug in a decoder must cost one photo, not the run
        return Prepared(file, existed, reason=f"cannot decode ({type(exc).__name__}: {exc})")
    if fingerprint is None:
        try:
            fingerprint = content_fingerprint(file.path)
        except OSError:
            fingerprint = None
    thumbnail_error = _save_thumbnail(file, fingerprint, photo, how.thumbnails) if how.thumbnails else None
    if how.crop:
        pixels: list[np.ndarray] | Image.Image = model_inputs(photo.image, how.cut())
    else:
        pixels = photo.image
    photo.image = None  # type: ignore[assignment]  # don't ship the picture twice
    return Prepared(file, existed, photo, pixels, fingerprint=fingerprint, thumbnail_error=thumbnail_error)


def _save_thumbnail(file: PhotoFile, fingerprint: str | None, photo: DecodedPhoto, folder: str) -> str | None:
    """Write the photo's thumbnail from the decode at hand (the worker writes the file: only
    a reason, if it fails, goes back to the main process). The reason, or None."""
    from pathlib import Path

    from photosearch import thumbnails

    facts = thumbnails.FileFacts(0, file.path, file.size, file.mtime_ns, fingerprint)
    try:
        thumbnails.save_decoded(facts, photo.image, Path(folder))
    except (thumbnails.PhotoChangedError, thumbnails.PhotoGoneError):
        return "the file changed while it was being indexed"
    except Exception as exc:  # a thumbnail must never cost the photo its place in the library
        return _thumbnail_failure(exc)
    return None


def thumbnail_one(job: tuple[PhotoFile, bool, Prepare, str | None]) -> Prepared:
    """The workers' job for a photo indexed before, unchanged, that has no thumbnail yet:
    made from the file once it is checked to be what was indexed (`thumbnails.make`).
    Never raises; `thumbnail_error` says why one couldn't be made."""
    from pathlib import Path

    from photosearch import thumbnails

    file, existed, how, fingerprint = job
    facts = thumbnails.FileFacts(0, file.path, file.size, file.mtime_ns, fingerprint)
    try:
        thumbnails.make(facts, max_pixels=how.max_pixels, folder=Path(how.thumbnails) if how.thumbnails else None)
        reason = None
    except thumbnails.PhotoGoneError:
        reason = "the file is gone or unreadable"
    except thumbnails.PhotoChangedError:
        reason = "the file changed since it was indexed"
    except DecodeError as exc:
        reason = exc.reason
    except Exception as exc:
        reason = _thumbnail_failure(exc)
    return Prepared(file, existed, thumbnail_error=reason)


def _thumbnail_failure(exc: Exception) -> str:
    from photosearch.errors import PhotosearchError

    if isinstance(exc, PhotosearchError):
        return exc.message
    return f"cannot make a thumbnail ({type(exc).__name__}: {exc})"


def default_workers() -> int:
    """One decode process per CPU this process may use (a 12 MP JPEG costs about as much CPU
    to decode as a ViT-B-32 costs to embed it in bf16, so on a many-core machine four were
    too few), at most 16 (each holds ~50 MB)."""
    return max(1, min(16, usable_cpus()))


def _context():
    # forkserver: children start clean, not as forks of a process that holds torch's threads.
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" not in methods:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # The server imports this module (numpy, Pillow, the decoders' glue) once, and every
    # worker is a fork of it: a pool gave its first results in half the time (~0.5 s sooner
    # on a busy 2-core machine), which a run of a few photos waits for. Only the server's
    # first start reads this.
    context.set_forkserver_preload([__name__])
    return context


def prepared(
    todo: Iterable[tuple[PhotoFile, bool]],
    how: Prepare,
    fingerprints: dict[bytes, str | None],
    *,
    workers: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    job: Callable[[tuple], Prepared] = prepare_one,
    ahead: int = 0,
) -> Iterator[Prepared]:
    """Prepared photos in the order of `todo`, computed by `workers` processes, which work
    up to `ahead` photos (at least 4 each) ahead of the caller.

    A file whose job runs longer than `timeout_s` (counted from when it is the oldest job
    still running) fails with a reason; the pool is replaced and the other jobs resubmitted.
    """
    workers = workers or default_workers()
    window = max(workers * 4, ahead)
    items = iter(todo)
    queue: deque[tuple[tuple, object]] = deque()
    pool = _context().Pool(workers)
    try:
        head_since = time.monotonic()
        while True:
            while len(queue) < window:
                nxt = next(items, None)
                if nxt is None:
                    break
                args = (nxt[0], nxt[1], how, fingerprints.get(nxt[0].path))
                queue.append((args, pool.apply_async(job, (args,))))
            if not queue:
                return
            args, pending = queue[0]
            try:
                result = pending.get(timeout=max(0.0, head_since + timeout_s - time.monotonic()))
            except multiprocessing.TimeoutError:
                pool.terminate()
                pool.join()
                queue.popleft()
                result = Prepared(args[0], args[1], reason=f"decoding took longer than {timeout_s:g} s; skipped")
                pool = _context().Pool(workers)
                queue = deque((a, pool.apply_async(job, (a,))) for a, _ in queue)
            else:
                queue.popleft()
            head_since = time.monotonic()
            yield result
    finally:
        pool.terminate()
        pool.join()
        if sys.exc_info()[0] is not None:
            # Stopped early (an interrupt, an error, or closed by the caller): the traceback
            # can keep this frame alive, and jobs still queued refer back to the pool, so its
            # named semaphores would outlive it. A CLI that then ends with os._exit leaves
            # them to multiprocessing's resource tracker, which warns of leaked semaphores.
            queue.clear()
            pending = pool = None  # noqa: F841
            gc.collect()
