"""Exact scores for a compressed index's candidates, from the vectors SQLite holds.

A big library's search index (vectors.py, from COMPRESS_ABOVE entries) keeps each vector as
a 128-byte product-quantizer code: 8x less memory than float16, but its scores are only
estimates, too coarse to order a photo library's many near-identical shots (see
docs/big-index.md for recall@10 from the codes alone). So the index proposes a few hundred
candidates and they are scored again, exactly, from their stored vectors, fetched from SQLite
by primary key: the same cosines an exact search gives, and no vector held in memory.

A narrow filter skips the index: its rows are few enough to score exactly from SQLite, which
is both faster than probing every list of a big index and exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# Candidates taken from the codes before the exact re-rank, at least (or the k asked for,
# if more). Measured on 1 M clustered 512-d vectors (bench/big_index.py, docs/big-index.md).
RERANK_DEPTH = 500
# A filter of at most this many entries is searched exactly from SQLite, not in the index.
EXACT_FILTER = 20_000

Fetch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class Reranked:
    """A compressed FAISS IVF index together with the way to its exact vectors: `fetch(ids)`
    gives (ids, float32 vectors) of those of the entry ids that still exist (any order).
    An index of tiles (`tiles_per_photo` set, entry ids photo id * TILE_IDS + tile) is
    filtered by every possible entry of the allowed photos, most of which don't exist: the
    average tiles a photo then says how many do."""

    def __init__(self, index, fetch: Fetch, depth: int = RERANK_DEPTH, tiles_per_photo: float | None = None):
        self.index = index
        self.fetch = fetch
        self.depth = depth
        self.tiles_per_photo = tiles_per_photo

    def allowed(self, only: np.ndarray) -> float:
        """About how many entries the filter `only` (entry ids, unique) lets through."""
        if self.tiles_per_photo is None:
            return float(len(only))
        from photosearch.store import TILE_IDS

        return len(np.unique(only // TILE_IDS)) * self.tiles_per_photo

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    @property
    def d(self) -> int:
        return self.index.d


def search(reranked: Reranked, queries: np.ndarray, k: int, only: np.ndarray | None = None, exclude=None):
    """(scores, ids), each (n_queries, k), best first, with -FLT_MAX and -1 where fewer
    qualify, like vectors.search; the scores are exact cosines from the stored vectors."""
    from photosearch import vectors

    queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, reranked.d)
    excluded = None if not exclude else np.fromiter(exclude, dtype=np.int64, count=len(exclude))
    if only is not None:
        only = np.unique(np.asarray(only, dtype=np.int64))
        if excluded is not None:
            only = only[~np.isin(only, excluded)]
        allowed = reranked.allowed(only)
        if allowed <= EXACT_FILTER:
            return _exact(reranked, queries, k, only)
    depth = max(k, reranked.depth)
    # A wide filter: probe proportionally more lists, so that about as many allowed
    # candidates are met as without a filter.
    widen = 1.0 if only is None else reranked.ntotal / max(allowed, 1.0)
    _, candidates = vectors.search_ivf(reranked.index, queries, depth, only=only, exclude=None if only is not None else exclude, widen=widen)
    out_scores, out_ids = _padding(len(queries), k)
    for q, row in enumerate(candidates):
        ids, matrix = reranked.fetch(row[row >= 0])
        out_scores[q], out_ids[q] = _best(_cosines(matrix, queries[q]), ids, k)
    return out_scores, out_ids


def _exact(reranked: Reranked, queries: np.ndarray, k: int, only: np.ndarray):
    ids, matrix = reranked.fetch(only)
    out_scores, out_ids = _padding(len(queries), k)
    for q, query in enumerate(queries):
        out_scores[q], out_ids[q] = _best(_cosines(matrix, query), ids, k)
    return out_scores, out_ids


def _cosines(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    # numpy's own loop, as vectors.FlatIndex does: BLAS's threads lose to it on one query.
    return np.einsum("ij,j->i", matrix, query)


def _padding(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.finfo(np.float32).max, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


def _best(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score, id), best first, ties to the lower id; padded as FAISS pads."""
    out_scores, out_ids = np.full(k, -np.finfo(np.float32).max, dtype=np.float32), np.full(k, -1, dtype=np.int64)
    order = np.lexsort((ids, -scores))[:k]
    out_scores[: len(order)], out_ids[: len(order)] = scores[order], ids[order]
    return out_scores, out_ids


def probes(nprobe: int, nlist: int, widen: float) -> int:
    """How many lists to probe when only 1/widen of the entries may be returned."""
    return max(1, min(nlist, math.ceil(nprobe * widen)))
