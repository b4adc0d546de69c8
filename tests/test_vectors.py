"""The search index: exact while small, IVF above the threshold, with good recall."""

from __future__ import annotations

import numpy as np
import pytest

from photosearch import vectors
from tests.support.pictures import make_pictures


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


def test_float16_ivf_halves_the_index_and_keeps_recall_at_10_above_095(library_vectors):
    """Against exact float32 search: the float16 IVF finds the same top 10 as often as the
    float32 one does, in about half the bytes."""
    import faiss

    data, queries = library_vectors
    ids = np.arange(len(data), dtype=np.int64) + 1
    exact = faiss.IndexFlatIP(256)
    exact.add(data)
    truth = ids[exact.search(queries, 10)[1]]
    sizes, recalls = {}, {}
    for dtype in ("float32", "float16"):
        index = vectors.build_from(ids, data, 256, dtype=dtype)
        _, got = vectors.search(index, queries, 10)
        recalls[dtype] = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), truth.tolist(), strict=True)])
        sizes[dtype] = len(faiss.serialize_index(index))
    assert vectors.kind(index).endswith("-fp16")
    assert recalls["float16"] >= 0.95, recalls
    assert recalls["float16"] >= recalls["float32"] - 0.005, recalls
    assert sizes["float16"] < 0.55 * sizes["float32"], sizes


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_filters_take_the_top_k_within_the_allowed_rows(kind, monkeypatch):
    data = clustered(3000, 32, seed=4)
    ids = np.arange(3000, dtype=np.int64) * 2 + 11
    index = vectors.build_from(ids, data, 32, ann_threshold=1000 if kind == "ivf" else 10_000)
    assert vectors.kind(index).startswith("ivf" if kind == "ivf" else "flat")
    rng = np.random.default_rng(5)
    for q in clustered(10, 32, seed=6):
        only = rng.choice(ids, size=40, replace=False)
        exclude = set(rng.choice(only, size=10, replace=False).tolist()) | {int(ids[0])}
        allowed = np.array(sorted(set(only.tolist()) - exclude))
        scores = data[np.searchsorted(ids, allowed)] @ q
        want = allowed[np.argsort(-scores, kind="stable")[:5]]
        _, got = vectors.search(index, q.reshape(1, -1), 5, only=only, exclude=exclude)
        assert got[0].tolist() == want.tolist()
        # Excluding alone: the best rows that aren't excluded.
        everything = data @ q
        order = ids[np.argsort(-everything, kind="stable")]
        best_excluded = set(order[:3].tolist())
        _, got = vectors.search(index, q.reshape(1, -1), 3, only=ids, exclude=best_excluded)
        assert got[0].tolist() == [i for i in order.tolist() if i not in best_excluded][:3]
    # Fewer allowed rows than k: the rest is padding, as FAISS pads.
    _, got = vectors.search(index, data[:1], 4, only=ids[:2])
    assert sorted(got[0][:2].tolist()) == ids[:2].tolist() and got[0][2:].tolist() == [-1, -1]


# -- the index file kept up to date --------------------------------------------------------


def synthetic_library(path, dim: int = 32):
    from photosearch.store import Store

    store = Store.open(path, create=True)
    store.set_meta({"model_name": "synthetic", "model_pretrained": "", "model_fingerprint": "synthetic", "dim": dim, "logit_scale": 100.0})
    return store


def put(store, names, rng, dim: int = 32) -> None:
    """Index (or re-index, with new vectors) photos called `names`."""
    from photosearch.store import PhotoRow

    points = clustered(len(names), dim, seed=int(rng.integers(1 << 30)))
    store.write_batch(
        [PhotoRow(f"/photos/{n}.jpg".encode(), 1, 1, 10, 10, "2020-01-01T00:00:00", "exif", v, None) for n, v in zip(names, points, strict=True)],
        [],
    )


def same_as_a_fresh_build(store, queries: np.ndarray) -> None:
    """The saved index answers like one built now from SQLite: exactly for the flat kind;
    for IVF, probing every list gives the exact top 10 (so it holds exactly SQLite's
    vectors under their ids), and its own probing agrees with a fresh build's."""
    loaded = vectors.load(store, persist=False)
    assert loaded.rebuilt_reason is None
    ids, matrix = store.all_vectors()
    fresh = vectors.build(store)
    assert loaded.index.ntotal == len(ids) == fresh.ntotal
    assert vectors.kind(loaded.index).startswith("ivf") == vectors.kind(fresh).startswith("ivf")  # nlist may differ
    truth = ids[np.argsort(-(queries @ matrix.T), axis=1, kind="stable")[:, :10]]
    if vectors.kind(fresh) == "flat-ip":
        got_scores, got = vectors.search(loaded.index, queries, 10)
        want_scores, want = vectors.search(fresh, queries, 10)
        assert got.tolist() == want.tolist() == truth.tolist()
        np.testing.assert_array_equal(got_scores, want_scores)
    else:
        _, every_list = vectors.search(loaded.index, queries, 10, only=ids)
        assert every_list.tolist() == truth.tolist()
        _, got = vectors.search(loaded.index, queries, 10)
        _, want = vectors.search(fresh, queries, 10)
        agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), want.tolist(), strict=True)])
        assert agree >= 0.9


def file_identity(path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_index_runs_catch_the_file_up_in_place_with_the_results_of_a_fresh_build(kind, tmp_path, monkeypatch):
    if kind == "ivf":
        monkeypatch.setattr(vectors, "ANN_THRESHOLD", 400)
    rng = np.random.default_rng(0)
    queries = clustered(30, 32, seed=99)
    store = synthetic_library(tmp_path / "lib.db")
    path = vectors.index_path(store.path)
    put(store, [f"a{i}" for i in range(600)], rng)
    assert vectors.refresh(store) == "rebuilt"
    assert vectors.kind(vectors.load(store).index).startswith("ivf" if kind == "ivf" else "flat")

    # Nothing changed: the file is neither read nor rewritten.
    before, manifest = file_identity(path), store.meta()
    assert vectors.refresh(store) == "current"
    assert file_identity(path) == before and store.meta() == manifest

    steps = [
        lambda: put(store, [f"b{i}" for i in range(50)], rng),  # new photos
        lambda: put(store, [f"a{i}" for i in range(0, 90, 3)], rng),  # changed photos keep their row ids
        lambda: store.remove([f"/photos/a{i}.jpg".encode() for i in range(1, 120, 3)]),
        lambda: store.reuse([(2, b"/photos/moved.jpg", 1, 1)], [(5, b"/photos/copy.jpg", 1, 1)]),
        lambda: store.remove([f"/photos/b{i}.jpg".encode() for i in range(50)]),  # the highest ids: SQLite hands them out again
        lambda: put(store, [f"c{i}" for i in range(30)], rng),
    ]
    for step in steps:
        step()
        assert vectors.refresh(store) == "updated"
        assert store.meta()["index_generation"] == store.meta()["generation"]
        same_as_a_fresh_build(store, queries)

    # Several runs' changes at once, as after an index run killed before it saved the index.
    for step in steps[:3]:
        step()
    assert vectors.refresh(store) == "updated"
    same_as_a_fresh_build(store, queries)


def test_ivf_is_retrained_when_the_library_doubles_or_halves(tmp_path, monkeypatch):
    monkeypatch.setattr(vectors, "ANN_THRESHOLD", 300)
    rng = np.random.default_rng(1)
    store = synthetic_library(tmp_path / "lib.db")
    put(store, [f"a{i}" for i in range(400)], rng)
    assert vectors.refresh(store) == "rebuilt"
    put(store, [f"b{i}" for i in range(390)], rng)  # 790: under twice the 400 it was trained on
    assert vectors.refresh(store) == "updated"
    assert store.meta()["index_trained_on"] == "400"
    put(store, [f"c{i}" for i in range(20)], rng)  # 810: over twice
    assert vectors.refresh(store) == "rebuilt"
    assert store.meta()["index_trained_on"] == "810"
    assert store.meta()["index_kind"] == f"ivf{int(np.sqrt(810))}-nprobe16"
    store.remove([f"/photos/b{i}.jpg".encode() for i in range(390)])  # 420: above half of 810
    assert vectors.refresh(store) == "updated"
    store.remove([f"/photos/c{i}.jpg".encode() for i in range(20)])  # 400: under half
    assert vectors.refresh(store) == "rebuilt"
    store.remove([f"/photos/a{i}.jpg".encode() for i in range(200)])  # below the threshold: exact search again
    assert vectors.refresh(store) == "rebuilt"
    assert store.meta()["index_kind"] == "flat-ip"
    same_as_a_fresh_build(store, clustered(10, 32, seed=3))


@pytest.mark.parametrize("where", ["header", "ids", "vectors"])
def test_a_damaged_flat_index_file_is_detected_and_rebuilt(where, tmp_path):
    store = synthetic_library(tmp_path / "lib.db")
    put(store, [f"a{i}" for i in range(300)], np.random.default_rng(2))
    vectors.refresh(store)
    path = vectors.index_path(store.path)
    data = bytearray(path.read_bytes())
    offset = {"header": 9, "ids": 64 + 8 * 150 + 1, "vectors": 64 + 8 * 300 + 4 * 32 * 200 + 2}[where]
    data[offset] ^= 0x01  # one bit
    path.write_bytes(bytes(data))
    loaded = vectors.load(store)
    assert loaded.rebuilt_reason == "is corrupt (checksum mismatch)"
    same_as_a_fresh_build(store, clustered(10, 32, seed=3))
    # Blocks swapped: every byte still there, in the wrong order.
    data = bytearray(path.read_bytes())
    data[4096:8192], data[8192:12288] = data[8192:12288], data[4096:8192]
    path.write_bytes(bytes(data))
    assert vectors.load(store).rebuilt_reason == "is corrupt (checksum mismatch)"


# -- float16 libraries ----------------------------------------------------------------------


def stored_widths(db) -> set[int]:
    import sqlite3

    conn = sqlite3.connect(db)
    widths = {row[0] for row in conn.execute("SELECT length(embedding) FROM photos")}
    conn.close()
    return widths


def test_converting_to_float16_halves_the_library_and_back_keeps_the_rounded_values(tmp_path):
    store = synthetic_library(tmp_path / "lib.db", dim=512)
    put(store, [f"a{i}" for i in range(3000)], np.random.default_rng(3), dim=512)
    vectors.refresh(store)
    ids, original = store.all_vectors()
    before = (tmp_path / "lib.db").stat().st_size
    queries = clustered(20, 512, seed=8)

    assert store.set_vector_dtype("float16") == 3000
    assert store.vector_dtype() == "float16" and stored_widths(tmp_path / "lib.db") == {1024}
    assert (tmp_path / "lib.db").stat().st_size < 0.6 * before
    assert not (tmp_path / "lib.db-wal").exists() or (tmp_path / "lib.db-wal").stat().st_size < 0.1 * before
    same_ids, halved = store.all_vectors()
    assert same_ids.tolist() == ids.tolist()
    np.testing.assert_array_equal(halved, original.astype(np.float16).astype(np.float32))
    assert vectors.load(store).rebuilt_reason == "is out of date"
    same_as_a_fresh_build(store, queries)
    put(store, ["new"], np.random.default_rng(4), dim=512)  # new photos are stored as float16 too
    assert stored_widths(tmp_path / "lib.db") == {1024}

    assert store.set_vector_dtype("float16") == 0  # already: nothing to do
    assert store.set_vector_dtype("float32") == 3001
    assert store.vector_dtype() == "float32" and stored_widths(tmp_path / "lib.db") == {2048}
    np.testing.assert_array_equal(store.all_vectors()[1][:3000], halved)
    vectors.refresh(store)
    same_as_a_fresh_build(store, queries)


def test_killing_a_conversion_leaves_the_library_whole_in_one_precision(tmp_path):
    import random
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    from tests.support.cli import REPO

    db = tmp_path / "lib.db"
    store = synthetic_library(db, dim=512)
    put(store, [f"a{i}" for i in range(15_000)], np.random.default_rng(5), dim=512)
    _, original = store.all_vectors()
    store.close()
    convert = [sys.executable, "-c", f"from pathlib import Path; from photosearch.store import Store; Store.open(Path({str(db)!r})).set_vector_dtype('float16')"]
    started = time.monotonic()
    subprocess.run([*convert[:2], convert[2].replace(str(db), str(tmp_path / "timing.db"))], cwd=REPO, check=False)
    rng = random.Random(6)
    kills = 0
    for _ in range(12):
        proc = subprocess.Popen(convert, cwd=REPO)
        time.sleep(rng.uniform(0.05, max(0.2, time.monotonic() - started)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        dtype = dict(conn.execute("SELECT key, value FROM meta")).get("vector_dtype", "float32")
        conn.close()
        assert stored_widths(db) == {512 * (2 if dtype == "float16" else 4)}
        if dtype == "float16":
            break
        started = time.monotonic()
    assert kills >= 1
    subprocess.run(convert, cwd=REPO, check=True)
    from photosearch.store import Store

    store = Store.open(db)
    np.testing.assert_array_equal(store.all_vectors()[1], original.astype(np.float16).astype(np.float32))


# -- through the command line -----------------------------------------------------------------


def query_scores(cli, db) -> dict[str, float]:
    import json

    result = cli("query", "a red square", "-k", "100", "--db", str(db), "--json")
    assert result.exit_code == 0, result.stderr
    return {r["path"]: r["score"] for r in map(json.loads, result.stdout.splitlines())}


def test_float16_library_from_the_command_line(cli, tiny_model, tmp_path):
    import json

    make_pictures(tmp_path / "pics", 12)
    half, full = tmp_path / "half.db", tmp_path / "full.db"
    model = f"local-dir:{tiny_model}"
    assert cli("index", str(tmp_path / "pics"), "--db", str(full), "--model", model).exit_code == 0
    result = cli("index", str(tmp_path / "pics"), "--db", str(half), "--model", model, "--vectors", "float16")
    assert result.exit_code == 0, result.stderr
    assert "Converted" not in result.stderr  # a new library: nothing to convert
    assert stored_widths(half) == {64 * 2} and stored_widths(full) == {64 * 4}
    info = json.loads(cli("info", "--db", str(half), "--json").stdout)
    assert (info["vector_dtype"], info["index_status"], info["index_vectors"]) == ("float16", "current", 12)
    # Those that aren't square have a vector a tile in the index of tiles (--crops max).
    assert info["crops"] == "max" and info["tile_index_vectors"] > 12
    assert json.loads(cli("info", "--db", str(full), "--json").stdout)["vector_dtype"] == "float32"

    # Same photos, same order of magnitude of scores: float16 moves a cosine by ~1e-3 at most.
    want = query_scores(cli, full)
    got = query_scores(cli, half)
    assert sorted(got) == sorted(want)
    assert max(abs(got[p] - want[p]) for p in want) < 2e-3
    # A photo as the query uses its stored float16 vector: it meets itself at cosine ~1.
    photo = str(sorted((tmp_path / "pics").iterdir())[3])
    found = cli("query", photo, "--include-query-images", "-k", "12", "--db", str(half), "--json").stdout
    assert {r["path"]: r["score"] for r in map(json.loads, found.splitlines())}[photo] == pytest.approx(1.0, abs=2e-3)

    # Later runs keep the library's precision without being told.
    make_pictures(tmp_path / "pics", 2, prefix="more", seed=5)
    assert cli("index", str(tmp_path / "pics"), "--db", str(half)).exit_code == 0
    assert stored_widths(half) == {64 * 2}


def test_converting_an_existing_library_from_the_command_line(cli, tiny_model, tmp_path):
    import json

    make_pictures(tmp_path / "pics", 12)
    db = tmp_path / "lib.db"
    assert cli("index", str(tmp_path / "pics"), "--db", str(db), "--model", f"local-dir:{tiny_model}").exit_code == 0
    before = query_scores(cli, db)

    result = cli("index", str(tmp_path / "pics"), "--db", str(db), "--vectors", "float16")
    assert result.exit_code == 0, result.stderr
    assert "Converted the library's vectors to float16." in result.stderr
    assert "0 added, 0 updated, 0 removed, 12 unchanged" in result.stderr  # nothing re-encoded
    info = json.loads(cli("info", "--db", str(db), "--json").stdout)
    assert (info["vector_dtype"], info["index_status"]) == ("float16", "current")
    after = query_scores(cli, db)
    assert sorted(after) == sorted(before) and max(abs(after[p] - before[p]) for p in before) < 2e-3

    again = cli("index", str(tmp_path / "pics"), "--db", str(db), "--vectors", "float16")
    assert "Converted" not in again.stderr
    back = cli("index", str(tmp_path / "pics"), "--db", str(db), "--vectors", "float32")
    assert "Converted the library's vectors to float32." in back.stderr
    assert stored_widths(db) == {64 * 4}
    assert query_scores(cli, db) == pytest.approx(after, abs=1e-6)  # widening is exact

    wrong = cli("index", str(tmp_path / "pics"), "--db", str(db), "--vectors", "float8")
    assert wrong.exit_code == 2 and "float8" in wrong.stderr


def test_an_index_run_that_changes_nothing_leaves_the_index_file_alone(cli, tiny_model, tmp_path):
    """...and one that changes a little catches the file up to what a clean run builds."""
    pics = tmp_path / "pics"
    photos = make_pictures(pics, 10)
    db = tmp_path / "lib.db"
    model = f"local-dir:{tiny_model}"
    assert cli("index", str(pics), "--db", str(db), "--model", model).exit_code == 0
    index_file = vectors.index_path(db)
    before = file_identity(index_file)
    assert "0 added, 0 updated, 0 removed, 10 unchanged" in cli("index", str(pics), "--db", str(db)).stderr
    assert file_identity(index_file) == before

    photos[1].unlink()
    make_pictures(pics, 3, prefix="new", seed=4)
    make_pictures(pics, 1, seed=9)  # photo000, with other content
    assert "3 added, 1 updated, 1 removed" in cli("index", str(pics), "--db", str(db)).stderr
    assert file_identity(index_file) != before
    assert cli("index", str(pics), "--db", str(tmp_path / "clean.db"), "--model", model).exit_code == 0
    assert query_scores(cli, db) == pytest.approx(query_scores(cli, tmp_path / "clean.db"), abs=1e-6)


def test_a_repeated_query_on_a_small_library_imports_no_faiss(cli, tiny_model, tmp_path):


    make_pictures(tmp_path / "pics", 5)
    db = tmp_path / "lib.db"
    assert cli("index", str(tmp_path / "pics"), "--db", str(db), "--model", f"local-dir:{tiny_model}").exit_code == 0
    first = cli("query", "a green circle", "--db", str(db), "--json", "--in", str(tmp_path / "pics"))
    assert first.exit_code == 0 and len(first.stdout.splitlines()) == 5
    from tests.support.probe import cli_code, probe

    run = probe(cli_code("query", "a green circle", "--db", str(db), "--json", "--in", str(tmp_path / "pics")), ("faiss", "torch", "onnxruntime"), timeout=60)
    assert run.imported == set(), run.stderr
    assert run.stdout == first.stdout
