"""Where each photo goes on the map: its vector laid out in 2-D.

Three steps, measured in docs/map.md:

1. PCA to `PCA_DIMS` dimensions (the covariance's eigenvectors): CLIP vectors keep most of
   their neighbourhoods in 50 dimensions, and every later step is ~10x cheaper there.
2. Up to `tsne.MAX` (1000) photos: exact t-SNE in numpy (photosearch/map/tsne.py), a second
   or a few. PCA's own plane was measured first and rejected: on the tiny test model's
   held-out pictures it kept 60 % of each photo's 10 nearest neighbours (t-SNE 95 %, UMAP
   90 %) and drew clusters on top of one another; UMAP costs ~15 s of numba compilation
   there. More photos: UMAP (umap-learn) over the exact 15 nearest neighbours of each
   photo, found by FAISS (already a photosearch dependency) rather than UMAP's own
   nearest-neighbour descent (slower on 2 cores, and more numba to compile).
3. Past `FIT_MAX` (50 000) photos, UMAP is fitted on an even random sample and every other photo
   placed among its nearest fitted neighbours (distance-weighted mean of their
   positions): 1 M photos cost about what `FIT_MAX` do, plus one FAISS search.

Positions are scaled into [-1, 1] (aspect kept), so every renderer starts from one frame.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from photosearch.errors import UsageError
from photosearch.map import tsne

PCA_DIMS = 50
FIT_MAX = 50_000  # above: UMAP on a sample of this many, the rest placed by neighbours
NEIGHBOURS = 15  # UMAP's n_neighbors (its default)
PLACE_NEIGHBOURS = 5
SEED = 0

METHODS = ("auto", "pca", "tsne", "umap")


def layout(vectors: np.ndarray, *, method: str = "auto", seed: int = SEED, on_step: Callable[[str], None] | None = None) -> tuple[np.ndarray, str]:
    """(n, 2) float32 positions in [-1, 1] for (n, dim) unit vectors, and the method used
    ("pca", "tsne", "umap", or "umap+placed" when fitted on a sample). Same input and seed: the
    same layout."""
    step = on_step or (lambda message: None)
    if method not in METHODS:
        raise UsageError(f"unknown layout {method!r}", f"use one of {', '.join(METHODS)}")
    n = len(vectors)
    if n == 0:
        return np.zeros((0, 2), np.float32), "pca"
    rng = np.random.default_rng(seed)
    step("projecting the vectors (PCA)")
    reduced = pca(vectors, min(PCA_DIMS, vectors.shape[1]), rng)
    plane = reduced[:, :2] if reduced.shape[1] >= 2 else np.pad(reduced, ((0, 0), (0, 2 - reduced.shape[1])))
    if method == "pca" or n < 4:
        return _unit_frame(plane), "pca"
    if method == "tsne" or (method == "auto" and n <= tsne.MAX):
        if n > 4 * tsne.MAX:
            raise UsageError(f"exact t-SNE of {n} photos would take hours", f"use --layout umap (or auto) past {tsne.MAX} photos")
        step(f"laying out {n} photos (t-SNE)")
        return _unit_frame(tsne.embed(reduced, plane)), "tsne"
    if n <= FIT_MAX:
        step(f"laying out {n} photos (UMAP)")
        return _unit_frame(_umap(reduced, seed)), "umap"
    fitted = np.sort(rng.choice(n, size=FIT_MAX, replace=False))
    step(f"laying out a sample of {FIT_MAX} of {n} photos (UMAP)")
    positions = np.empty((n, 2), np.float32)
    positions[fitted] = _umap(reduced[fitted], seed)
    rest = np.setdiff1d(np.arange(n), fitted, assume_unique=True)
    step(f"placing the other {len(rest)} photos by their nearest neighbours")
    positions[rest] = place(reduced[fitted], positions[fitted], reduced[rest])
    return _unit_frame(positions), "umap+placed"


def pca(vectors: np.ndarray, dims: int, rng: np.random.Generator, sample: int = 20_000) -> np.ndarray:
    """(n, dims) float32: the vectors on their first `dims` principal axes, fitted on a
    sample (the axes of 20 k CLIP vectors are those of a million, for a picture)."""
    x = np.asarray(vectors, dtype=np.float32)
    fit = x if len(x) <= sample else x[rng.choice(len(x), size=sample, replace=False)]
    mean = fit.mean(axis=0, dtype=np.float64)
    centred = fit - mean.astype(np.float32)
    # The covariance's eigenvectors: a (dim, dim) problem, where an SVD of the sample took 10 s.
    values, vectors_ = np.linalg.eigh((centred.T @ centred).astype(np.float64))
    axes = vectors_[:, np.argsort(values)[::-1][:dims]].astype(np.float32)
    mean = mean.astype(np.float32)
    # Signs of singular vectors are arbitrary: fix them so the same library draws the same way.
    axes *= np.where(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])] < 0, -1, 1).astype(np.float32)
    out = np.empty((len(x), axes.shape[1]), np.float32)
    for start in range(0, len(x), 100_000):
        out[start : start + 100_000] = (x[start : start + 100_000] - mean) @ axes
    return out


EXACT_WORK = 1e9  # base rows × queries past which placing searches an IVF index, not all rows


def nearest(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, euclidean distances) of each query's `k` nearest rows of `base`, exact."""
    return _search(_index(base, exact=True), queries, k)


def _index(base: np.ndarray, *, exact: bool):
    """A FAISS index of `base`: every row (exact), or an inverted file probing 16 of ~4√n
    lists, ~25x fewer distances when a million photos are placed among the fitted ones."""
    import faiss

    base = np.ascontiguousarray(base, dtype=np.float32)
    if exact:
        index = faiss.IndexFlatL2(base.shape[1])
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(base.shape[1]), base.shape[1], int(4 * np.sqrt(len(base))))
        index.train(base)
        index.nprobe = 16
    index.add(base)
    return index


def _search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    squared, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return found.astype(np.int64), np.sqrt(np.maximum(squared, 0))


def place(base: np.ndarray, base_xy: np.ndarray, queries: np.ndarray, k: int = PLACE_NEIGHBOURS) -> np.ndarray:
    """Positions for `queries` among the laid-out `base` rows: the inverse-distance
    weighted mean of their `k` nearest rows' positions."""
    out = np.empty((len(queries), 2), np.float32)
    index = _index(base, exact=len(base) * len(queries) <= EXACT_WORK)
    k = min(k, len(base))
    for start in range(0, len(queries), 100_000):
        found, distance = _search(index, queries[start : start + 100_000], k)
        missing = found < 0  # an inverted file can find fewer than k
        weights = np.where(missing, 0.0, 1.0 / (distance + 1e-6))
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
        out[start : start + len(found)] = (base_xy[np.maximum(found, 0)] * weights[..., None]).sum(axis=1)
    return out


def _umap(reduced: np.ndarray, seed: int) -> np.ndarray:
    import warnings

    try:
        import umap
    except ImportError:
        raise UsageError(
            f"a map of more than {tsne.MAX} photos is laid out with UMAP, and umap-learn isn't installed",
            "pip install 'photosearch[map]' (or umap-learn), or pass --layout pca",
        ) from None
    k = min(NEIGHBOURS, len(reduced) - 1)
    found, distance = nearest(reduced, reduced, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", "precomputed_knn" notes
        model = umap.UMAP(
            n_neighbors=k,
            min_dist=0.1,
            metric="euclidean",
            precomputed_knn=(found, distance.astype(np.float32), None),
            random_state=seed,
            init="pca",
            low_memory=True,
        )
        return model.fit_transform(reduced).astype(np.float32)


def _unit_frame(xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float32)
    centre = (xy.max(axis=0) + xy.min(axis=0)) / 2
    half = float((xy.max(axis=0) - xy.min(axis=0)).max()) / 2
    return ((xy - centre) / (half if half > 0 else 1.0)).astype(np.float32)
