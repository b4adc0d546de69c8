"""The search index: a derived cache of the vectors in SQLite, caught up on changes.

One file next to the library (`library.db.faiss`), in one of two formats:

- Below ANN_THRESHOLD vectors, a flat matrix in our own layout (below), memory-mapped and
  searched exactly with numpy, so a query from a fresh process needn't import FAISS or read
  and copy the whole file (a FAISS file must be read whole: ~25x slower to load and search
  once at 49 k vectors, bench/ann.py `cold`). It holds float32 even for a float16 library
  (widened exactly; numpy has no fast float16 arithmetic: widening would cost 60-150 ms a
  query at 49 k), so at most 100 MB at 512-d.
- From ANN_THRESHOLD up, a FAISS inverted-file index: IVF-Flat for float32 libraries, IVF
  with a float16 scalar quantizer for float16 ones (half the file and memory, same recall:
  bench/ann.py).
- From COMPRESS_ABOVE up (1 M entries; PHOTOSEARCH_COMPRESS_ABOVE), IVF with 128-byte product
  quantizer codes, whose candidates are re-ranked exactly from the vectors in SQLite
  (rerank.py): the index no longer holds the vectors, so 10 M of them take ~1.4 GB, not 10 GB
  (docs/big-index.md). `load` hands it out joined to its store (`rerank.Reranked`).

Writes are atomic: a temporary file in the same folder, fsynced, renamed over the old one
while holding SQLite's write lock, together with a manifest in the library's `meta` table
(`index_generation`, `index_count`, `index_format`, `index_checksum`, `index_bytes`,
`index_kind`, `index_codec`, `index_trained_on`), so a reader always sees one whole version and knows which
version of the library it holds. A missing, truncated or corrupt file is detected on load
and rebuilt from SQLite, never silently empty. Vectors are kept under their SQLite row ids.

A library indexed with `--crops max` has a second index of the same kind beside it
(`library.db.tiles.faiss`, manifest keys `tiles_index_*`): a vector a tile, under the entry id
row id * store.TILE_IDS + tile (a photo with one vector: tile 0). Text searches go there and
map entries back to photos, each photo once at its best tile's score (query.py); image
queries compare photos' own vectors in the first. Everything below holds for both (`kind`).

Keeping up: every photo row records the generation that last wrote its vector (`vector_gen`,
store.py). An index file that is whole but older than the library is brought up to date by
dropping the ids SQLite no longer has or has rewritten and adding the rows written since,
instead of a rebuild (an IVF rebuild takes 1-2 minutes at 1 M vectors on 2 cores). It is
rebuilt from scratch only when the file is missing or damaged, the library crossed
ANN_THRESHOLD or COMPRESS_ABOVE either way (the manifest's `codec` no longer what
`codec_for` says; a moved PHOTOSEARCH_COMPRESS_ABOVE counts), the precision changed, or an
IVF index holds more than twice or less than half the vectors its lists were trained on. An
index run that changed nothing leaves the file alone. Added vectors are encoded with the
codes the index was trained with.

Flat layout (all little-endian):
    0   8 bytes  magic b"PSFLAT1\\n"
    8   uint64   n, the number of vectors
    16  uint64   dim
    24  40 bytes zero
    64  int64[n]          row ids, ascending
        float32[n, dim]   the vectors, in the same order
        zeros to a multiple of 4096 bytes
Its checksum ("sum64") reads the file as 4096-byte blocks of uint64 words: Σ (2i+1)·(sum of
block i's words) mod 2^64. Any change within one block changes it, as does moving blocks
around; it costs ~8 ms for 100 MB here, where sha256 costs ~60 ms (FAISS files keep sha256).
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
from photosearch.store import TILE_IDS, Store, storage_error

# Exact search while a library is small; an inverted-file index above this size. Measured
# here (bench/ann.py, 1 M clustered 512-d vectors): exact search ~90 ms a query on one
# thread, IVF with nlist = √n and 16 lists probed 2 ms at recall@10 0.999 (1/2 ms and 0.98
# at 100 k), built in 13 s; HNSW32 reached only 0.66-0.84 recall at 1 M and took 385 s. IVF
# over HNSW: it honours the ID selectors that filters use (probing every list then, so a
# narrow filter still gets its exact top k), needs no memory for graph links, and takes
# removals and additions in place.
ANN_THRESHOLD = 50_000
TRAIN_SAMPLE = 50_000
NPROBE = 16
# From this many entries up, the IVF lists hold product-quantizer codes (PQ_BYTES a vector)
# instead of whole vectors, and the candidates are re-ranked exactly from SQLite (rerank.py):
# an IVF-fp16 index holds 1 KB a 512-d vector, so 1 GB at 1 M and 10 GB at 10 M, where the
# compressed one holds 136 bytes (code + id): 1.4 GB at 10 M. 128 one-byte codes of 4
# dimensions each, not 64 of 8: on 1 M clustered vectors 64 needed 1000 candidates for
# recall@10 0.97, 128 reach 0.996 with 250 (docs/big-index.md). The environment variable
# PHOTOSEARCH_COMPRESS_ABOVE moves the threshold (a tuning knob: a machine with memory to
# spare can keep whole vectors longer). Measurements: docs/big-index.md.
COMPRESS_ABOVE = 1_000_000
ENV_COMPRESS_ABOVE = "PHOTOSEARCH_COMPRESS_ABOVE"
PQ_BYTES = 128
COMPRESSED_NPROBE = 32
# Each sub-quantizer learns 256 centres: fewer vectors than a few of those per centre can't
# train it, whatever the threshold says.
COMPRESS_MIN = 1024
# An IVF index is retrained once it holds more than RETRAIN_GROWTH times, or less than
# 1/RETRAIN_GROWTH of, the vectors its lists were trained on: lists grown lopsided make
# probing 16 of them cover less.
RETRAIN_GROWTH = 2.0
ADD_CHUNK = 50_000

FLAT_MAGIC = b"PSFLAT1\n"
FLAT_HEADER = 64
BLOCK = 4096


PHOTOS, TILES = "photos", "tiles"  # the two kinds of index (see the module docstring)


def compress_above() -> int:
    """The entry count from which an index is compressed (COMPRESS_ABOVE, or the
    environment's PHOTOSEARCH_COMPRESS_ABOVE)."""
    value = os.environ.get(ENV_COMPRESS_ABOVE, "").strip()
    if not value:
        return COMPRESS_ABOVE
    try:
        return int(value.replace("_", ""))
    except ValueError:
        raise PhotosearchError(f"{ENV_COMPRESS_ABOVE}={value!r} is not a number of vectors", "set it to a whole number, e.g. 1000000, or unset it") from None


def codec_for(n: int, dtype: str, dim: int) -> str:
    """How an index of `n` entries stores them: 'flat' (exact, numpy), 'ivf-flat',
    'ivf-fp16' or 'ivf-pq{bytes}x8' (compressed, re-ranked from SQLite)."""
    if _compressed(n):
        return f"ivf-pq{_pq_subquantizers(dim)}x8"
    if n < ANN_THRESHOLD:
        return "flat"
    return "ivf-fp16" if dtype == "float16" else "ivf-flat"


def _compressed(n: int) -> bool:
    return n >= max(compress_above(), COMPRESS_MIN)


def _pq_subquantizers(dim: int) -> int:
    """PQ_BYTES one-byte codes a vector, or the nearest count that divides `dim`."""
    return max(m for m in range(1, min(PQ_BYTES, dim) + 1) if dim % m == 0)


def index_path(library: Path, kind: str = PHOTOS) -> Path:
    return Path(str(library) + (".faiss" if kind == PHOTOS else ".tiles.faiss"))


def _prefix(kind: str) -> str:
    """The index's manifest keys in `meta` start with this."""
    return "index_" if kind == PHOTOS else "tiles_index_"


@dataclass
class LoadedIndex:
    index: object  # FlatIndex or faiss.Index
    rebuilt_reason: str | None  # why it had to be rebuilt or caught up from SQLite, or None
    tiles: bool = False  # it holds tiles (entry ids), not photos (row ids)


class FlatIndex:
    """Exact inner-product search over float32 vectors with int64 row ids (ascending), in
    numpy: what a small library searches, without importing FAISS."""

    def __init__(self, ids: np.ndarray, matrix: np.ndarray):
        self.ids = ids
        self.matrix = matrix

    @property
    def ntotal(self) -> int:
        return len(self.ids)

    @property
    def d(self) -> int:
        return self.matrix.shape[1]

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Positions of those of `ids` that the index holds, ascending."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids)
        found = pos < len(self.ids)
        found[found] = self.ids[pos[found]] == ids[found]
        return np.unique(pos[found])

    def reconstruct(self, row_id: int) -> np.ndarray:
        pos = self.positions(np.array([row_id]))
        if len(pos) == 0:
            raise KeyError(row_id)
        return np.array(self.matrix[pos[0]], dtype=np.float32)

    def search(self, queries: np.ndarray, k: int, only: np.ndarray | None = None, exclude=None):
        """(scores, ids), each (n_queries, k), best first, like FAISS: -FLT_MAX and -1 pad
        where fewer than k rows qualify. `only`/`exclude` restrict the rows *before* the top
        k is taken. Ties go to the lower row id."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.d)
        if len(queries) == 1:
            # numpy's own single-threaded loop: for one query about 2.5x faster than BLAS's
            # threaded matrix-vector product here, and unaffected by a busy second core.
            scores = np.einsum("ij,j->i", self.matrix, queries[0]).reshape(1, -1)
        else:
            scores = queries @ self.matrix.T
        candidates = None if only is None else self.positions(only)
        if exclude is not None and len(exclude):
            dropped = self.positions(np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
            base = np.arange(self.ntotal) if candidates is None else candidates
            candidates = np.setdiff1d(base, dropped, assume_unique=True)
        if candidates is not None:
            scores = scores[:, candidates]
        available = scores.shape[1]
        top = min(k, available)
        out_scores = np.full((len(queries), k), -np.finfo(np.float32).max, dtype=np.float32)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        if top == 0:
            return out_scores, out_ids
        for q, row in enumerate(scores):
            best = np.argpartition(-row, top - 1)[:top] if top < available else np.arange(available)
            best = best[np.lexsort((best, -row[best]))]
            out_scores[q, :top] = row[best]
            out_ids[q, :top] = self.ids[best if candidates is None else candidates[best]]
        return out_scores, out_ids


# -- building ---------------------------------------------------------------------------


def build(store: Store, kind: str = PHOTOS):
    """A fresh index of every vector in the library, or of every tile (call inside
    `store.snapshot()` to build from one consistent version)."""
    dtype = store.vector_dtype()
    dim = int(store.meta().get("dim", 0))
    tiles = kind == TILES
    n = store.entry_count(tiles)
    codec = codec_for(n, dtype, dim)
    if codec == "flat":
        ids, matrix = store.entries(tiles=tiles)
        return build_from(ids, matrix, dim, dtype=dtype)
    # Train on a sample, then add a chunk at a time: a million float32 vectors needn't sit in
    # memory next to the index.
    ids = store.entry_ids(tiles)
    index = _empty_ivf(dim, int(np.sqrt(n)), dtype, compressed=codec.startswith("ivf-pq"))
    sample = np.sort(np.random.default_rng(0).choice(ids, size=_train_size(n, index.nlist), replace=False))
    found, matrix = store.entries_by_id(sample, tiles)
    _train(index, matrix[np.isin(found, sample)])
    for chunk_ids, matrix in store.iter_entries(tiles, ADD_CHUNK):
        index.add_with_ids(matrix, chunk_ids)
    return index


def build_from(ids: np.ndarray, matrix: np.ndarray, dim: int, ann_threshold: int = ANN_THRESHOLD, *, dtype: str = "float32"):
    """Exact inner-product search below `ann_threshold` vectors, IVF above it (storing
    `dtype`: float32, or float16 through FAISS's scalar quantizer)."""
    ids = np.asarray(ids, dtype=np.int64)
    matrix = np.ascontiguousarray(matrix, dtype=np.float32).reshape(len(ids), dim)
    compressed = _compressed(len(ids))
    if len(ids) < ann_threshold and not compressed:
        order = np.argsort(ids, kind="stable")
        return FlatIndex(ids[order], matrix[order])
    index = _empty_ivf(dim, int(np.sqrt(len(ids))), dtype, compressed=compressed)
    sample = np.random.default_rng(0).choice(len(ids), size=_train_size(len(ids), index.nlist), replace=False)
    _train(index, matrix[np.sort(sample)])
    index.add_with_ids(matrix, ids)
    return index


def _empty_ivf(dim: int, nlist: int, dtype: str, *, compressed: bool = False):
    import faiss

    quantizer = faiss.IndexFlatIP(dim)
    if compressed:
        # Codes of each vector's residual from its list's centre, one byte per sub-vector.
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, _pq_subquantizers(dim), 8, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = COMPRESSED_NPROBE
        index.cp.niter = 10
        index.cp.min_points_per_centroid = 16
        index.pq.cp.min_points_per_centroid = COMPRESS_MIN // 256  # only a warning's trigger
        index.pq.cp.niter = 10  # 128 k-means on 50 k points: 25 rounds cost minutes on 2 cores
        return index
    if dtype == "float16":
        # by_residual=False: the codes are the vectors themselves in float16, so a score is
        # one dot product, as exact as float16 allows.
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT, False)
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.nprobe = NPROBE
    # k-means on a sample, few iterations: list quality beyond this buys little recall
    # (nprobe covers it), and 16 points a list is enough (no warning about it).
    index.cp.niter = 10
    index.cp.min_points_per_centroid = 16
    return index


def _train_size(n: int, nlist: int) -> int:
    return min(n, max(TRAIN_SAMPLE, 16 * nlist))


def _train(index, sample: np.ndarray) -> None:
    index.train(np.ascontiguousarray(sample, dtype=np.float32))


def kind(index) -> str:
    """What `photosearch info` shows: 'flat-ip', 'ivf{nlist}-nprobe{n}' (-fp16), or for a
    compressed index 'ivf{nlist}-nprobe{n}-pq{m}x8-rerank{depth}'."""
    from photosearch.rerank import Reranked

    depth = None
    if isinstance(index, Reranked):
        index, depth = index.index, index.depth
    if isinstance(index, FlatIndex):
        return "flat-ip"
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return "flat-ip"
    name = f"ivf{ivf.nlist}-nprobe{ivf.nprobe}"
    if _is_compressed(index):
        from photosearch.rerank import RERANK_DEPTH

        return name + f"-pq{faiss.downcast_index(ivf).pq.M}x8-rerank{depth or RERANK_DEPTH}"
    return name + ("-fp16" if _stores_float16(index) else "")


def codec(index) -> str:
    """`codec_for`'s name for what `index` is."""
    from photosearch.rerank import Reranked

    if isinstance(index, Reranked):
        index = index.index
    if isinstance(index, FlatIndex):
        return "flat"
    if _is_compressed(index):
        import faiss

        return f"ivf-pq{faiss.downcast_index(faiss.try_extract_index_ivf(index)).pq.M}x8"
    return "ivf-fp16" if _stores_float16(index) else "ivf-flat"


def _is_compressed(index) -> bool:
    import faiss

    return isinstance(faiss.downcast_index(faiss.try_extract_index_ivf(index)), faiss.IndexIVFPQ)


def _stores_float16(index) -> bool:
    import faiss

    return isinstance(faiss.downcast_index(faiss.try_extract_index_ivf(index)), faiss.IndexIVFScalarQuantizer)


# -- searching --------------------------------------------------------------------------


def search(index, query: np.ndarray, k: int, selector=None, *, exhaustive: bool = False, only: np.ndarray | None = None, exclude=None):
    """The k best rows for each query: (scores, ids), best first, -1 ids where fewer qualify.

    `only` (row ids) and `exclude` (row ids) restrict the rows *before* the top k is taken;
    they work with either kind of index, and an IVF index then probes every list, so a
    narrow filter still finds its k best. `selector` is a FAISS ID selector (FAISS indexes
    only), with `exhaustive` to probe every list.
    """
    from photosearch import rerank

    if isinstance(index, FlatIndex):
        if selector is not None:
            raise TypeError("a FAISS selector needs a FAISS index; pass only=/exclude= row ids")
        return index.search(query, k, only=only, exclude=exclude)
    if isinstance(index, rerank.Reranked):
        if selector is not None:
            raise TypeError("a compressed index takes only=/exclude= row ids, not a FAISS selector")
        return rerank.search(index, query, k, only=only, exclude=exclude)
    return search_ivf(index, query, k, selector, exhaustive=exhaustive, only=only, exclude=exclude)


def search_ivf(index, query: np.ndarray, k: int, selector=None, *, exhaustive: bool = False, only=None, exclude=None, widen: float | None = None):
    """`search` on a FAISS index. `widen`: with `only`, probe that many times the lists
    (rerank.py's wide filters) instead of every list."""
    import faiss

    # One query is too little work to split: with another process on the second core,
    # FAISS's default two threads made single searches 3.5-4.6x slower (bench/ann.py).
    if len(query) == 1:
        faiss.omp_set_num_threads(1)
    kept = []  # FAISS selectors hold raw pointers to the selectors they wrap: keep those alive
    excluded = None if not exclude else np.fromiter(exclude, dtype=np.int64, count=len(exclude))
    if selector is None and only is not None:
        only = np.ascontiguousarray(only, dtype=np.int64)
        if excluded is not None:
            only = only[~np.isin(only, excluded)]
        selector, exhaustive = faiss.IDSelectorBatch(only), widen is None
    elif selector is None and excluded is not None:
        kept.append(faiss.IDSelectorBatch(excluded))
        selector = faiss.IDSelectorNot(kept[-1])
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        from photosearch.rerank import probes

        nprobe = ivf.nlist if exhaustive else probes(ivf.nprobe, ivf.nlist, widen or 1.0)
        params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
        return index.search(query, k, params=params)
    if selector is not None:
        return index.search(query, k, params=faiss.SearchParameters(sel=selector))
    return index.search(query, k)


# -- loading and keeping up ---------------------------------------------------------------


def load(store: Store, *, persist: bool = True, kind: str = PHOTOS) -> LoadedIndex:
    """The index for the library's current generation: from the file if it is whole and
    current; caught up from SQLite if it is whole but older; else rebuilt from SQLite. What
    was caught up or rebuilt is saved if `persist` and the folder is writable. `kind`:
    PHOTOS, or TILES for a library that holds them (`store.holds_tiles()`)."""
    version = _current(store, kind)
    if version.reason is not None and persist:
        try:
            _save(store, version)
        except (OSError, sqlite3.Error, PhotosearchError):
            pass  # a read-only library still answers queries from the rebuilt index
    return LoadedIndex(for_search(store, version.index, kind), version.reason, kind == TILES)


def for_search(store: Store, index, kind: str = PHOTOS):
    """`index` as searches take it: a compressed one joined to the store its candidates
    are re-ranked from (rerank.py); any other as it is."""
    if isinstance(index, FlatIndex) or not _is_compressed(index):
        return index
    from photosearch.rerank import Reranked

    tiles = kind == TILES

    def fetch(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found, matrix = store.entries_by_id(ids, tiles)
        if tiles:  # a photo's every tile came: keep the entries asked for
            keep = np.isin(found, ids)
            found, matrix = found[keep], matrix[keep]
        return found, matrix

    return Reranked(index, fetch, tiles_per_photo=index.ntotal / max(store.count(), 1) if tiles else None)


def status(store: Store, kind: str = PHOTOS) -> str:
    """'current', 'stale' or 'missing': the index file as its manifest describes it (a
    damaged file passes for current here; loading it finds out and rebuilds it)."""
    manifest, key = store.index_manifest(_prefix(kind)), _prefix(kind)
    path = index_path(store.path, kind)
    if not path.exists():
        return "missing"
    current = (
        manifest.get(key + "generation") == str(store.generation())
        and manifest.get(key + "format") in ("flat", "faiss")
        and str(path.stat().st_size) == manifest.get(key + "bytes")
    )
    recorded = manifest.get(key + "codec")
    if current and recorded is not None:  # e.g. PHOTOSEARCH_COMPRESS_ABOVE moved past it
        dim = int(store.meta().get("dim", 0))
        current = recorded == codec_for(int(manifest.get(key + "count", 0)), store.vector_dtype(), dim)
    return "current" if current else "stale"


def refresh(store: Store) -> str:
    """After an index run: bring the file up to the library's generation (and the tiles'
    file, for a library that holds tiles; one that no longer does loses it). Returns
    'current' (nothing to do: the file is not even read, let alone rewritten), 'updated'
    (caught up in place) or 'rebuilt', for the photos' index. Errors writing are raised."""
    outcome = _refresh(store, PHOTOS)
    if store.holds_tiles():
        _refresh(store, TILES)
    else:
        _drop(store, TILES)
    return outcome


def _refresh(store: Store, kind: str) -> str:
    if status(store, kind) == "current":
        return "current"
    version = _current(store, kind, writer=True)
    _save(store, version)
    return "updated" if version.caught_up else "rebuilt"


def _drop(store: Store, kind: str) -> None:
    """Remove an index the library no longer keeps (its file; its manifest says nothing)."""
    try:
        index_path(store.path, kind).unlink()
    except FileNotFoundError:
        pass


@dataclass
class _Version:
    index: object
    generation: int
    trained_on: int | None  # IVF: how many vectors its lists were trained on
    reason: str | None = None  # not the file's version as it was: why
    caught_up: bool = False
    kind: str = PHOTOS


def _current(store: Store, kind: str, *, writer: bool = False) -> _Version:
    """The index at the library's current generation, in one consistent snapshot. The
    `writer` (an index run) also rebuilds a current file that is no longer of the kind
    `codec_for` asks for (the threshold was moved); a query takes it as it is."""
    with store.snapshot():
        meta = store.meta()
        generation = int(meta.get("generation", 0))
        cached, reason = _read_file(store, meta, kind)
        if cached is not None and cached.generation == generation:
            if not writer or codec(cached.index) == codec_for(cached.index.ntotal, store.vector_dtype(), cached.index.d):
                return cached
            cached, reason = None, "is of another kind than its size asks for"
        if cached is not None:
            caught_up = _catch_up(store, cached, meta)
            if caught_up is not None:
                return _Version(caught_up, generation, cached.trained_on, "is out of date", caught_up=True, kind=kind)
            reason = "is out of date"
        index = build(store, kind)
        trained_on = index.ntotal if not isinstance(index, FlatIndex) else None
        return _Version(index, generation, trained_on, reason or "is out of date", kind=kind)


def _read_file(store: Store, meta: dict[str, str], kind: str) -> tuple[_Version | None, str | None]:
    """The file as its manifest describes it, or (None, what is wrong with it)."""
    path, key = index_path(store.path, kind), _prefix(kind)
    fmt = meta.get(key + "format")
    checksum = meta.get(key + "checksum")
    if not path.exists():
        return None, "is missing"
    if fmt not in ("flat", "faiss") or checksum is None or key + "generation" not in meta:
        return None, "is out of date"
    try:
        with open(path, "rb") as f:
            index = _read_flat(f, checksum) if fmt == "flat" else _read_faiss(f, checksum)
    except _Damaged as exc:
        return None, str(exc)
    except OSError:
        return None, "can't be read"
    if index.ntotal != int(meta.get(key + "count", -1)):
        return None, "holds the wrong number of vectors"
    trained = meta.get(key + "trained_on")
    return _Version(index, int(meta[key + "generation"]), int(trained) if trained else None, kind=kind), None


class _Damaged(Exception):
    pass


def _read_flat(f, checksum: str) -> FlatIndex:
    size = os.fstat(f.fileno()).st_size
    if size < BLOCK or size % BLOCK:
        raise _Damaged("is corrupt (truncated)")
    data = np.memmap(f, dtype=np.uint8, mode="r")
    if checksum != "sum64:" + _sum64(data):
        raise _Damaged("is corrupt (checksum mismatch)")
    if bytes(data[:8]) != FLAT_MAGIC:
        raise _Damaged("can't be read")
    n, dim = (int(v) for v in data[8:24].view("<u8"))
    end = FLAT_HEADER + 8 * n + 4 * n * dim
    if end > size:
        raise _Damaged("can't be read")
    ids = data[FLAT_HEADER : FLAT_HEADER + 8 * n].view("<i8")
    matrix = data[FLAT_HEADER + 8 * n : end].view("<f4").reshape(n, dim)
    return FlatIndex(ids, matrix)


def _read_faiss(f, checksum: str):
    import faiss

    digest = hashlib.sha256()
    while chunk := f.read(1 << 24):
        digest.update(chunk)
    if checksum != "sha256:" + digest.hexdigest():
        raise _Damaged("is corrupt (checksum mismatch)")
    f.seek(0)  # parse what was verified: the same open file, even if a writer replaced the path
    try:
        return faiss.read_index(faiss.PyCallbackIOReader(f.read))
    except RuntimeError:
        raise _Damaged("can't be read") from None


def _catch_up(store: Store, cached: _Version, meta: dict[str, str]):
    """`cached.index` brought from its generation to the library's: the rows SQLite no longer
    has or has rewritten since are dropped, the rewritten and new ones added. None when a
    rebuild is due instead (see the module docstring)."""
    index, tiles = cached.index, cached.kind == TILES
    per = TILE_IDS if tiles else 1  # an entry's photo is entry id // per
    flat = isinstance(index, FlatIndex)
    if cached.generation > int(meta["generation"]):
        return None
    if index.d != int(meta.get("dim", 0)):  # an empty library's index, from before it had a model
        return None
    # What changed, read from SQLite's index on vector_gen alone, never from the table of
    # vectors (gigabytes at millions of photos): the photos that exist, and the entries of
    # those written since. A photo's entries change only when its vector is written again
    # (its tiles with it), so the held entries to drop are those of photos gone or rewritten.
    photos = store.photo_ids()
    changed_ids, changed = store.entries_written_after(cached.generation, tiles)
    held = index.ids if flat else _faiss_ids(index)
    held_photos = held // per
    gone = held[~np.isin(held_photos, photos, assume_unique=per == 1) | np.isin(held_photos, changed_ids // per)]
    n = len(held) - len(gone) + len(changed_ids)  # the entries the library has now
    # Crossed a threshold, or the precision changed: another kind of index is due.
    if codec(index) != codec_for(n, store.vector_dtype(), index.d):
        return None
    if not flat:
        trained = cached.trained_on or 0
        if not trained / RETRAIN_GROWTH <= n <= trained * RETRAIN_GROWTH:
            return None
    if flat:
        keep = ~np.isin(index.ids, gone)
        ids = np.concatenate([index.ids[keep], changed_ids])
        order = np.argsort(ids, kind="stable")
        matrix = np.concatenate([index.matrix[keep], changed])[order]
        index = FlatIndex(ids[order], matrix)
    else:
        import faiss

        if len(gone):
            index.remove_ids(faiss.IDSelectorBatch(gone))
        if len(changed_ids):
            index.add_with_ids(changed, changed_ids)
    if index.ntotal != n or (not tiles and n != len(photos)):  # can't happen; a rebuild would put it right
        return None
    return index


def _faiss_ids(index) -> np.ndarray:
    """Every id an IVF index holds."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = [np.zeros(0, np.int64)]
    for number in range(ivf.nlist):
        size = lists.list_size(number)
        if size:
            parts.append(faiss.rev_swig_ptr(lists.get_ids(number), size).copy())
    return np.sort(np.concatenate(parts))


# -- saving -----------------------------------------------------------------------------


def save(store: Store, index, generation: int, *, trained_on: int | None = None, kind: str = PHOTOS) -> bool:
    """Write `index` atomically and record it in the manifest, if the library is still at
    `generation`. Returns False when the library moved on (the file would be stale)."""
    if trained_on is None and not isinstance(index, FlatIndex):
        trained_on = index.ntotal
    return _save(store, _Version(index, generation, trained_on, kind=kind))


def _save(store: Store, version: _Version) -> bool:
    target = index_path(store.path, version.kind)
    try:
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise storage_error(store.path, exc) from None
    try:
        try:
            with os.fdopen(fd, "w+b") as f:
                if isinstance(version.index, FlatIndex):
                    fmt, checksum = "flat", "sum64:" + _write_flat(f, version.index)
                else:
                    fmt, checksum = "faiss", "sha256:" + _write_faiss(f, version.index)
                f.flush()
                os.fsync(f.fileno())
                size = f.tell()
        except OSError as exc:
            raise storage_error(store.path, exc) from None
        manifest = {
            "count": version.index.ntotal,
            "format": fmt,
            "checksum": checksum,
            "bytes": size,
            "kind": kind(version.index),
            "codec": codec(version.index),
            "trained_on": version.trained_on,
        }
        if not store.record_index(version.generation, manifest, lambda: os.replace(tmp, target), _prefix(version.kind)):
            os.unlink(tmp)
            return False
        _fsync_dir(target.parent)
        return True
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_flat(f, index: FlatIndex) -> str:
    n, dim = index.ntotal, index.d
    header = FLAT_MAGIC + np.array([n, dim], dtype="<u8").tobytes()
    f.write(header.ljust(FLAT_HEADER, b"\0"))
    f.write(np.ascontiguousarray(index.ids, dtype="<i8").tobytes())
    for start in range(0, n, ADD_CHUNK):
        f.write(np.ascontiguousarray(index.matrix[start : start + ADD_CHUNK], dtype="<f4").tobytes())
    f.write(b"\0" * (-f.tell() % BLOCK))
    f.flush()
    return _sum64(np.memmap(f, dtype=np.uint8, mode="r"))


def _write_faiss(f, index) -> str:
    import faiss

    digest = hashlib.sha256()

    def write(data: bytes) -> int:
        digest.update(data)
        return f.write(data)

    faiss.write_index(index, faiss.PyCallbackIOWriter(write))
    return digest.hexdigest()


def _sum64(data: np.ndarray) -> str:
    """The flat file's checksum (module docstring); `data` is the whole file as uint8."""
    sums = data.view("<u8").reshape(-1, BLOCK // 8).sum(axis=1, dtype=np.uint64)
    weights = np.arange(1, 2 * len(sums), 2, dtype=np.uint64)
    return format(int((sums * weights).sum(dtype=np.uint64)), "016x")


def remove_leftovers(library: Path) -> None:
    """Temp files of saves that were killed half-way (only the writer calls this)."""
    for kind in (PHOTOS, TILES):
        target = index_path(library, kind)
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
