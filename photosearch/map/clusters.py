"""Groups of photos, found on their vectors (not on the 2-D map).

Spherical k-means (numpy), with the number of clusters
chosen by the cosine silhouette on a sample: docs/map.md says why k-means rather than HDBSCAN
(every photo gets a cluster, a million photos cost seconds, 512-d density estimates are what
HDBSCAN is worst at). `clusters=N` fixes the number instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from photosearch.errors import UsageError

MAX_AUTO = 40  # more named regions than a map can show legibly
MIN_AUTO = 2
SILHOUETTE_SAMPLE = 2000
# The numbers of clusters tried: every one up to 20, then coarser (a map of 36 regions or 40
# reads the same); ~20 small k-means runs on the sample, a few seconds on 2 cores.
CANDIDATES = (*range(2, 21), 24, 28, 32, 36, 40)
MIN_PER_CLUSTER = 4  # the automatic choice never makes clusters smaller than this, on average
TRAIN_PER_CLUSTER = 256  # centres are fitted on a sample of this many photos a cluster (FAISS's default)


@dataclass
class Grouping:
    assignment: np.ndarray  # (n,) int: 0-based cluster of each photo, biggest cluster first
    centres: np.ndarray  # (k, dim) unit vectors
    silhouette: float | None  # of the chosen k on the sample (None when k was given)


def group(vectors: np.ndarray, clusters: int | None = None, *, seed: int = 0) -> Grouping:
    """Cluster (n, dim) unit vectors; clusters numbered by size, biggest first."""
    n = len(vectors)
    if clusters is not None and clusters < 1:
        raise UsageError(f"{clusters} clusters is not a number of clusters", "ask for 1 or more, or leave --clusters out")
    if n == 0:
        return Grouping(np.zeros(0, np.int64), np.zeros((0, vectors.shape[1]), np.float32), None)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    rng = np.random.default_rng(seed)
    score = None
    if clusters is None:
        clusters, score = choose_k(x, rng, seed)
    k = min(clusters, n)
    centres = _kmeans(x, k, seed, restarts=2)
    assignment = _assign(x, centres)
    sizes = np.bincount(assignment, minlength=k)
    kept = [c for c in np.argsort(-sizes, kind="stable") if sizes[c] > 0]
    renumber = np.full(k, -1, np.int64)
    renumber[kept] = np.arange(len(kept))
    centres = centres[kept]
    return Grouping(renumber[assignment], centres, score)


def choose_k(x: np.ndarray, rng: np.random.Generator, seed: int) -> tuple[int, float]:
    """The k (MIN_AUTO..MAX_AUTO) whose clustering of a sample has the best mean cosine
    silhouette: members close to their own cluster and far from the next one."""
    sample = x if len(x) <= SILHOUETTE_SAMPLE else x[rng.choice(len(x), size=SILHOUETTE_SAMPLE, replace=False)]
    top = min(MAX_AUTO, len(sample) // MIN_PER_CLUSTER)
    if top < MIN_AUTO:
        return 1, 0.0
    distance = np.clip(1.0 - sample @ sample.T, 0.0, 2.0)
    best = (MIN_AUTO, -2.0)
    for k in (k for k in CANDIDATES if MIN_AUTO <= k <= top):
        labels = _assign(sample, _kmeans(sample, k, seed, restarts=2))
        score = silhouette(distance, labels)
        if score > best[1] + 1e-9:
            best = (k, score)
    return best


def silhouette(distance: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of a clustering, from the (n, n) distances between its points."""
    k = int(labels.max()) + 1
    onehot = np.zeros((len(labels), k), np.float32)
    onehot[np.arange(len(labels)), labels] = 1
    sizes = onehot.sum(axis=0)
    sums = distance @ onehot  # (n, k): each point's summed distance to each cluster
    own = sizes[labels]
    a = sums[np.arange(len(labels)), labels] / np.maximum(own - 1, 1)
    mean_to = sums / np.maximum(sizes, 1)
    mean_to[np.arange(len(labels)), labels] = np.inf
    mean_to[:, sizes == 0] = np.inf
    b = mean_to.min(axis=1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def _kmeans(x: np.ndarray, k: int, seed: int, restarts: int = 4, iterations: int = 20) -> np.ndarray:
    """(k, dim) unit centres: spherical k-means (Lloyd's iterations on cosine) from k-means++
    seeds, the best of a few starts (one unlucky seeding otherwise merges two clear groups
    and splits a third). Fitted on at most 256 photos a cluster, as FAISS does; numpy, not
    FAISS: on a busy 2-core machine FAISS's OpenMP threads made the same runs 5x slower."""
    if k == 1:
        centre = x.mean(axis=0, keepdims=True)
        return centre / max(float(np.linalg.norm(centre)), 1e-12)
    rng = np.random.default_rng(seed)
    train = x if len(x) <= TRAIN_PER_CLUSTER * k else x[rng.choice(len(x), size=TRAIN_PER_CLUSTER * k, replace=False)]
    best, best_fit = None, -np.inf
    for _ in range(restarts):
        centres = _seeds(train, k, rng)
        for _ in range(iterations):
            similarity = train @ centres.T
            labels = similarity.argmax(axis=1)
            members = np.zeros((k, len(train)), np.float32)
            members[labels, np.arange(len(train))] = 1.0
            sums = members @ train  # each cluster's summed vectors, as one matrix product
            empty = np.flatnonzero(np.bincount(labels, minlength=k) == 0)
            if len(empty):  # an empty cluster restarts at the photos fitting their centre worst
                worst = np.argsort(similarity[np.arange(len(train)), labels])[: len(empty)]
                sums[empty] = train[worst]
            updated = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
            if np.allclose(updated, centres, atol=1e-6):
                break
            centres = updated.astype(np.float32)
        fit = float((train @ centres.T).max(axis=1).sum())  # members' summed cosine to their centre
        if fit > best_fit:
            best, best_fit = centres, fit
    return best


def _seeds(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++: each next seed drawn with probability growing with its distance from the
    seeds so far, so every clear group tends to get one."""
    chosen = [int(rng.integers(len(x)))]
    closest = np.clip(1.0 - x @ x[chosen[0]], 0.0, None)
    for _ in range(1, k):
        total = float(closest.sum())
        pick = int(rng.choice(len(x), p=closest / total)) if total > 0 else int(rng.integers(len(x)))
        chosen.append(pick)
        closest = np.minimum(closest, np.clip(1.0 - x @ x[pick], 0.0, None))
    return np.ascontiguousarray(x[chosen], dtype=np.float32)


def _assign(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    out = np.empty(len(x), np.int64)
    for start in range(0, len(x), 100_000):
        out[start : start + 100_000] = (x[start : start + 100_000] @ centres.T).argmax(axis=1)
    return out
