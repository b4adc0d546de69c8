"""The search index: exact while small, IVF above the threshold, with good recall."""

from __future__ import annotations

import numpy as np
import pytest

from photosearch import vectors


def clustered(n: int, dim: int, seed: int, clusters: int = 500) -> np.ndarray:
    """Unit vectors around Zipf-sized clusters, like a photo library's many similar shots."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, clusters + 1)
    labels = rng.choice(clusters, size=n, p=weights / weights.sum())
    points = centres[labels] + rng.standard_normal((n, dim)).astype(np.float32) * (0.9 / np.sqrt(dim))
    return points / np.linalg.norm(points, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def library_vectors():
    data = clustered(80_000 + 300, 256, seed=1)
    return data[:80_000], data[80_000:]


def test_small_libraries_use_exact_search():
    data = clustered(1000, 32, seed=0)
    index = vectors.build_from(np.arange(1000, dtype=np.int64) + 7, data, 32)
    assert vectors.kind(index) == "flat-ip"
    scores, ids = vectors.search(index, data[:1], 1)
    assert ids[0][0] == 7 and scores[0][0] == pytest.approx(1.0, abs=1e-5)


def test_large_libraries_use_ivf_with_recall_at_10_above_095(library_vectors):
    import faiss

    data, queries = library_vectors
    ids = np.arange(len(data), dtype=np.int64) * 3 + 5  # row ids are not positions
    index = vectors.build_from(ids, data, 256)
    assert vectors.kind(index).startswith("ivf")
    exact = faiss.IndexIDMap2(faiss.IndexFlatIP(256))
    exact.add_with_ids(data, ids)
    _, truth = exact.search(queries, 10)
    _, got = vectors.search(index, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), truth.tolist(), strict=True)])
    assert recall >= 0.95, recall

    # The probe setting survives saving and loading.
    again = faiss.deserialize_index(faiss.serialize_index(index))
    assert vectors.kind(again) == vectors.kind(index)

    # With a filter, every list is probed: the k best *within* the filter, exactly.
    allowed = ids[::97]
    selector = faiss.IDSelectorBatch(allowed)
    _, filtered = vectors.search(index, queries[:20], 10, selector, exhaustive=True)
    sub = faiss.IndexIDMap2(faiss.IndexFlatIP(256))
    sub.add_with_ids(data[::97], allowed)
    _, want = sub.search(queries[:20], 10)
    assert filtered.tolist() == want.tolist()
