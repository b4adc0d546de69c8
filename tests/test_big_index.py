"""A big library's index: compressed codes above PHOTOSEARCH_COMPRESS_ABOVE entries, their
candidates re-ranked exactly from SQLite (docs/big-index.md). The threshold is lowered here
through that same knob, so a CI-sized library takes the path a 10 M one does."""

from __future__ import annotations

import contextlib
import json
import os
import shutil

import numpy as np
import pytest

from photosearch import rerank, vectors
from photosearch.store import TILE_IDS, PhotoRow
from tests.test_vectors import clustered, synthetic_library

DIM = 256
THRESHOLD = 1500
N = 2000
CODEC = "ivf-pq128x8"  # 128 one-byte codes a vector


@contextlib.contextmanager
def one_faiss_thread():
    # Training 64 small k-means on a busy 2-core machine: a second OpenMP thread only waits.
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


@pytest.fixture(autouse=True)
def low_threshold(monkeypatch):
    monkeypatch.setenv(vectors.ENV_COMPRESS_ABOVE, str(THRESHOLD))
    with one_faiss_thread():
        yield


def points(n: int, seed: int) -> np.ndarray:
    return clustered(n, DIM, seed=seed, clusters=40)


def put(store, names: list[str], x: np.ndarray, *, tiles: list[np.ndarray | None] | None = None) -> None:
    store.write_batch(
        [PhotoRow(f"/photos/{n}.jpg".encode(), 1, 1, 10, 10, "2020-01-01T00:00:00", "exif", v, None,
                  crops=None if tiles is None else "max", tiles=None if tiles is None else tiles[i])
         for i, (n, v) in enumerate(zip(names, x, strict=True))],
        [],
    )  # fmt: skip


def exact(store, queries: np.ndarray, k: int = 10, only: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    ids, matrix = store.all_vectors()
    if only is not None:
        keep = np.isin(ids, only)
        ids, matrix = ids[keep], matrix[keep]
    scores = queries @ matrix.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got.tolist(), want.tolist(), strict=True)]))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A library of N clustered vectors, over the (lowered) threshold, and its index:
    built once, copied for each test (training the codes is the slow part)."""
    folder = tmp_path_factory.mktemp("big")
    old = os.environ.get(vectors.ENV_COMPRESS_ABOVE)
    os.environ[vectors.ENV_COMPRESS_ABOVE] = str(THRESHOLD)
    try:
        store = synthetic_library(folder / "lib.db", dim=DIM)
        put(store, [f"a{i}" for i in range(N)], points(N, seed=1))
        with one_faiss_thread():
            assert vectors.refresh(store) == "rebuilt"
        store.close()
    finally:
        if old is None:
            del os.environ[vectors.ENV_COMPRESS_ABOVE]
        else:
            os.environ[vectors.ENV_COMPRESS_ABOVE] = old
    return folder / "lib.db"


@pytest.fixture
def big(built, tmp_path):
    from photosearch.store import Store

    for path in (built, vectors.index_path(built)):
        shutil.copy(path, tmp_path / path.name)
    return Store.open(tmp_path / built.name)


def test_above_the_threshold_the_index_holds_codes_and_reranks_to_the_exact_cosines(big):
    meta = big.meta()
    assert meta["index_codec"] == CODEC
    assert meta["index_kind"].endswith(f"-pq128x8-rerank{rerank.RERANK_DEPTH}")
    loaded = vectors.load(big)
    assert loaded.rebuilt_reason is None and isinstance(loaded.index, rerank.Reranked)
    # 128 bytes of code a vector (and 8 of id), where float32 takes 1024.
    assert loaded.index.index.code_size == 128 and loaded.index.ntotal == N

    queries = points(60, seed=2)
    scores, got = vectors.search(loaded.index, queries, 10)
    want_scores, want = exact(big, queries)
    assert recall(got, want) >= 0.95
    # Every score is the exact cosine of the stored vector, not the codes' estimate.
    ids, matrix = big.all_vectors()
    stored = matrix[np.searchsorted(ids, got)]
    np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", stored, queries), rtol=0, atol=1e-6)
    same = got == want
    np.testing.assert_allclose(scores[same], want_scores[same], rtol=0, atol=1e-6)


def test_new_photos_are_encoded_with_the_trained_codes_and_found_at_once(big):
    trained = big.meta()["index_trained_on"]
    fresh = points(30, seed=3)
    put(big, [f"new{i}" for i in range(30)], fresh)
    put(big, [f"a{i}" for i in range(10)], points(10, seed=4))  # re-encoded: same row ids, new vectors
    big.remove([f"/photos/a{i}.jpg".encode() for i in range(10, 20)])
    assert vectors.refresh(big) == "updated"
    assert big.meta()["index_trained_on"] == trained and big.meta()["index_codec"] == CODEC

    index = vectors.load(big).index
    ids, matrix = big.all_vectors()
    for vector in np.concatenate([fresh, points(10, seed=4)]):
        scores, got = vectors.search(index, vector.reshape(1, -1), 1)
        assert scores[0][0] == pytest.approx(1.0, abs=1e-5)
        assert np.allclose(matrix[np.searchsorted(ids, got[0][0])], vector, atol=1e-6)
    gone = set(range(11, 21))  # a10..a19 had row ids 11..20
    _, got = vectors.search(index, points(50, seed=5), 50)
    assert not gone & set(got.ravel().tolist()) and set(got.ravel().tolist()) <= set(ids.tolist())


def test_filters_and_exclusions_apply_before_the_top_k(big, monkeypatch):
    index = vectors.load(big).index
    queries = points(20, seed=6)
    ids = big.photo_ids()
    narrow = ids[::50]  # 40 photos: scored exactly from SQLite
    wide = ids[::3]  # a third: the index, probing 3x the lists
    monkeypatch.setattr(rerank, "EXACT_FILTER", 100)
    for only, least in ((narrow, 1.0), (wide, 0.95)):
        got_scores, got = vectors.search(index, queries, 10, only=only)
        want_scores, want = exact(big, queries, only=only)
        assert set(got.ravel().tolist()) <= set(only.tolist())
        assert recall(got, want) >= least
        if least == 1.0:
            assert got.tolist() == want.tolist()
            np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=1e-6)
    # Excluding (a query's own photos) drops them and keeps k results.
    _, best = exact(big, queries[:1], k=3)
    _, got = vectors.search(index, queries[:1], 10, exclude=set(best[0].tolist()))
    assert not set(best[0].tolist()) & set(got[0].tolist()) and (got[0] >= 0).all()


def test_the_kind_follows_the_threshold_both_ways(big, monkeypatch):
    # Below the threshold again: back to the kind a library of that size gets.
    big.remove([f"/photos/a{i}.jpg".encode() for i in range(600)])  # 1400
    assert vectors.refresh(big) == "rebuilt"
    assert big.meta()["index_codec"] == "flat"
    assert isinstance(vectors.load(big).index, vectors.FlatIndex)
    put(big, [f"b{i}" for i in range(200)], points(200, seed=7))  # 1600: over it
    assert vectors.refresh(big) == "rebuilt"
    assert big.meta()["index_codec"] == CODEC
    # Moving the knob makes the index stale, even with no photo changed.
    monkeypatch.setenv(vectors.ENV_COMPRESS_ABOVE, "10000000")
    assert vectors.status(big) == "stale"
    assert vectors.refresh(big) == "rebuilt" and big.meta()["index_codec"] == "flat"
    monkeypatch.setenv(vectors.ENV_COMPRESS_ABOVE, "not a number")
    with pytest.raises(vectors.PhotosearchError, match="PHOTOSEARCH_COMPRESS_ABOVE"):
        vectors.status(big)


def test_an_index_of_tiles_is_compressed_and_reranked_the_same_way(tmp_path, monkeypatch):
    store = synthetic_library(tmp_path / "lib.db", dim=DIM)
    store.set_meta({"crops": "max"})
    x = points(1000 * 2, seed=8).reshape(1000, 2, DIM)  # 1000 photos of 2 tiles: 2000 entries
    means = x.mean(axis=1)
    put(store, [f"t{i}" for i in range(1000)], means / np.linalg.norm(means, axis=1, keepdims=True), tiles=list(x))
    vectors.refresh(store)
    assert store.meta()["tiles_index_codec"] == CODEC and store.meta()["index_codec"] == "flat"
    from photosearch import Library

    facts = Library.open(store.path).info()  # what `photosearch info` shows of both indexes
    assert facts.index_kind.startswith("flat") and facts.tile_index_kind.endswith(f"-pq128x8-rerank{rerank.RERANK_DEPTH}")
    index = vectors.load(store, kind=vectors.TILES).index
    assert isinstance(index, rerank.Reranked)
    queries = points(30, seed=9)
    flat_tiles = x.reshape(-1, DIM)
    entry_ids = (np.arange(1, 1001)[:, None] * TILE_IDS + np.arange(2)).ravel()
    want = entry_ids[np.argsort(-(queries @ flat_tiles.T), axis=1, kind="stable")[:, :10]]
    scores, got = vectors.search(index, queries, 10)
    assert recall(got, want) >= 0.95
    exact_scores = np.einsum("qkd,qd->qk", flat_tiles[np.searchsorted(entry_ids, got)], queries)
    np.testing.assert_allclose(scores, exact_scores, rtol=0, atol=1e-6)

    # A filter names every possible entry of its photos (query.py): a third of the photos.
    monkeypatch.setattr(rerank, "EXACT_FILTER", 100)
    photos = np.arange(1, 1001)[::3]
    only = (photos[:, None] * TILE_IDS + np.arange(TILE_IDS)).ravel()
    allowed = np.isin(entry_ids // TILE_IDS, photos)
    want = entry_ids[allowed][np.argsort(-(queries @ flat_tiles[allowed].T), axis=1, kind="stable")[:, :10]]
    _, got = vectors.search(index, queries, 10, only=only)
    assert set((got.ravel() // TILE_IDS).tolist()) <= set(photos.tolist())
    assert recall(got, want) >= 0.95


@pytest.mark.parametrize("ann", [False, True])
def test_an_index_of_tiles_catches_up_on_new_removed_and_recut_photos(ann, tmp_path, monkeypatch):
    """Catching up reads no table of vectors: which entries to drop comes from the photos
    that are gone or rewritten. A photo rewritten with another number of tiles (recut) must
    lose its old tiles and gain its new ones, exactly as a fresh build would hold them."""
    if ann:
        monkeypatch.setattr(vectors, "ANN_THRESHOLD", 300)
    store = synthetic_library(tmp_path / "lib.db", dim=DIM)
    store.set_meta({"crops": "max"})

    def tiled(names, seed, count):
        x = points(len(names) * count, seed=seed).reshape(len(names), count, DIM)
        means = x.mean(axis=1)
        put(store, names, means / np.linalg.norm(means, axis=1, keepdims=True), tiles=list(x) if count > 1 else None)

    tiled([f"t{i}" for i in range(300)], 1, 2)
    assert vectors.refresh(store) == "rebuilt"
    tiled([f"n{i}" for i in range(40)], 2, 3)  # new photos of 3 tiles
    tiled([f"t{i}" for i in range(0, 60, 2)], 3, 1)  # recut: 2 tiles -> 1 vector (tile 0)
    tiled([f"t{i}" for i in range(1, 60, 2)], 4, 3)  # recut: 2 tiles -> 3
    store.remove([f"/photos/t{i}.jpg".encode() for i in range(100, 130)])
    assert vectors.refresh(store) == "updated"
    caught_up = vectors.load(store, kind=vectors.TILES).index
    want_ids, want = store.entries(tiles=True)
    assert caught_up.ntotal == len(want_ids) == (300 - 60 - 30) * 2 + 30 * 1 + 30 * 3 + 40 * 3
    held = np.sort(vectors._faiss_ids(caught_up)) if ann else caught_up.ids
    assert held.tolist() == want_ids.tolist()
    _, found = vectors.search(caught_up, want[:50], 1)
    assert (found[:, 0] == want_ids[:50]).mean() >= 0.9  # each entry its own best match


def test_the_library_searches_and_reports_a_compressed_index(big, cli):
    """What a user sees: `photosearch info` names the kind, and searches (a photo as the
    query, filters) work through the Library as on a small library."""
    from photosearch import Library
    from photosearch.filters import Filters

    info = json.loads(cli("info", "--db", str(big.path), "--json").stdout)
    assert info["index_kind"].endswith(f"-pq128x8-rerank{rerank.RERANK_DEPTH}") and info["index_status"] == "current"
    library = Library.open(big.path)
    hits = library.search(5, k=5, include_query_images=True)
    assert hits[0].id == 5 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    _, want = exact(big, big.vector_of(5).reshape(1, -1), k=6)
    assert [h.id for h in library.search(5, k=5)] == want[0][1:].tolist()  # its own photo left out
    only = library.search(5, k=5, filters=Filters(globs=["a1*.jpg"]))
    assert only and all(h.path.name.startswith("a1") for h in only)


def test_duplicates_says_when_a_selection_is_too_big_to_compare_pair_by_pair(big, monkeypatch):
    from photosearch import Library, duplicates
    from photosearch.errors import UsageError
    from photosearch.filters import Filters

    monkeypatch.setattr(duplicates, "MAX_PHOTOS", 500)
    library = Library.open(big.path)
    with pytest.raises(UsageError, match=f"every pair of photos: {N:,}") as raised:
        library.duplicates()
    assert "--in FOLDER" in raised.value.hint
    assert library.duplicates(filters=Filters(globs=["a1??.jpg"])) == []  # 100 photos: compared
