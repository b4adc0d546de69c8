"""The FAISS index: a derived cache of the vectors in SQLite, rebuilt whenever it is stale.

The file lives next to the library (`library.db.faiss`). It is written to a temporary file
in the same folder, fsynced and renamed over the old one, so a reader always sees one whole
version. A manifest in the library's `meta` table (generation, count, sha256 of the file)
says which version of the library the file holds; on load, a missing, stale, truncated or
corrupt file is detected and the index is rebuilt from SQLite, never silently empty.
Vectors are kept under their SQLite row ids (IndexIDMap2), never by implicit position.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from photosearch.errors import PhotosearchError
from photosearch.store import Store, storage_error

# Exact search while a library is small; an inverted-file index above this size. Measured
# here (bench/ann.py, 1 M clustered 512-d vectors): exact search ~90 ms a query on one
# thread, IVF with nlist = √n and 16 lists probed 2 ms at recall@10 0.999 (1/2 ms and 0.98
# at 100 k), built in 13 s; HNSW32 reached only 0.66-0.84 recall at 1 M and took 385 s. IVF over HNSW: it honours the ID selectors that filters use (probing every
# list then, so a narrow filter still gets its exact top k) and needs no memory for graph
# links. It is rebuilt from SQLite after each index run that changed something: about
# 1-2 minutes for 1 M vectors on 2 cores (an incremental update is future work).
ANN_THRESHOLD = 50_000
TRAIN_SAMPLE = 50_000


def index_path(library: Path) -> Path:
    return Path(str(library) + ".faiss")


@dataclass
class LoadedIndex:
    index: object  # faiss.Index
    rebuilt_reason: str | None  # why it had to be rebuilt from SQLite, or None


def build(store: Store):
    ids, matrix = store.all_vectors()
    dim = int(store.meta().get("dim", matrix.shape[1] if matrix.ndim == 2 else 0))
    return build_from(ids, matrix, dim)


def build_from(ids: np.ndarray, matrix: np.ndarray, dim: int, ann_threshold: int = ANN_THRESHOLD):
    """Exact inner-product search below `ann_threshold` vectors, IVF above it."""
    import faiss

    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if len(ids) < ann_threshold:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if len(ids):
            index.add_with_ids(matrix, ids)
        return index
    nlist = int(np.sqrt(len(ids)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    # k-means on a sample, few iterations: the build runs after every index run that changed
    # something, and list quality beyond this buys little recall (nprobe covers it).
    index.cp.niter = 10
    index.cp.min_points_per_centroid = 16  # we sample 16 per list on purpose: no warning
    sample = matrix[np.random.default_rng(0).choice(len(ids), size=min(len(ids), max(TRAIN_SAMPLE, 16 * nlist)), replace=False)]
    index.train(sample)
    index.add_with_ids(matrix, ids)
    index.nprobe = 16
    return index


def kind(index) -> str:
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    return f"ivf{ivf.nlist}-nprobe{ivf.nprobe}" if ivf is not None else "flat-ip"


def search(index, query: np.ndarray, k: int, selector=None, *, exhaustive: bool = False):
    """FAISS search with an optional ID selector. `exhaustive` (used with filters) makes an
    IVF index probe every list, so a narrow filter still finds its k best."""
    import faiss

    # One query is too little work to split: with another process on the second core,
    # FAISS's default two threads made single searches 3.5-4.6x slower (bench/ann.py).
    if len(query) == 1:
        faiss.omp_set_num_threads(1)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        params = faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nlist if exhaustive else ivf.nprobe)
        return index.search(query, k, params=params)
    if selector is not None:
        return index.search(query, k, params=faiss.SearchParameters(sel=selector))
    return index.search(query, k)


def save(store: Store, index, generation: int) -> bool:
    """Write `index` atomically and record it in the manifest, if the library is still at
    `generation`. Returns False when the library moved on (the file would be stale)."""
    import faiss

    target = index_path(store.path)
    data = faiss.serialize_index(index).tobytes()
    try:
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise storage_error(store.path, exc) from None
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise storage_error(store.path, exc) from None
        # Holding SQLite's write lock while we swap the file keeps file and manifest in step
        # with any other process doing the same.
        with store.transaction() as conn:
            current = int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
            if current != generation:
                os.unlink(tmp)
                return False
            os.replace(tmp, target)
            store._set_meta(
                {
                    "index_generation": generation,
                    "index_count": index.ntotal,
                    "index_sha256": hashlib.sha256(data).hexdigest(),
                    "index_kind": kind(index),
                }
            )
        _fsync_dir(target.parent)
        return True
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_leftovers(library: Path) -> None:
    """Temp files of saves that were killed half-way (only the writer calls this)."""
    target = index_path(library)
    for leftover in target.parent.glob(target.name + ".*.tmp"):
        try:
            leftover.unlink()
        except OSError:
            pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(store: Store, *, persist: bool = True) -> LoadedIndex:
    """The index for the library's current generation: from the file if it is whole and
    current, else rebuilt from SQLite (and saved, if `persist` and the folder is writable)."""
    import faiss

    meta = store.meta()
    generation = int(meta.get("generation", 0))
    reason = _file_problem(store, meta, generation)
    if reason is None:
        data = index_path(store.path).read_bytes()
        if hashlib.sha256(data).hexdigest() == meta.get("index_sha256"):
            try:
                index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
                if index.ntotal == int(meta.get("index_count", -1)):
                    return LoadedIndex(index, None)
                reason = "holds the wrong number of vectors"
            except RuntimeError:
                reason = "can't be read"
        else:
            reason = "is corrupt (checksum mismatch)"
    index = build(store)
    if persist:
        try:
            save(store, index, generation)
        except (OSError, sqlite3.Error, PhotosearchError):
            pass  # a read-only library still answers queries from the rebuilt index
    return LoadedIndex(index, reason)


def _file_problem(store: Store, meta: dict[str, str], generation: int) -> str | None:
    path = index_path(store.path)
    if not path.exists():
        return "is missing"
    if meta.get("index_generation") != str(generation):
        return "is out of date"
    return None
