"""Nothing lost: moved files, killed runs, concurrent readers, full and read-only disks,
hostile folders."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import REPO
from tests.support.pictures import make_pictures


def rows(db: Path) -> dict[bytes, np.ndarray]:
    """path -> the photo's vector followed by its tiles' (if any), as stored."""
    conn = sqlite3.connect(db)
    out = {p: np.frombuffer(e + (t or b""), dtype="<f4") for p, e, t in conn.execute("SELECT path, embedding, tiles FROM photos")}
    conn.close()
    return out


@pytest.fixture
def count_encodes(monkeypatch):
    from photosearch.model import encode

    calls: list[int] = []
    original = encode.Encoder.encode_images

    def counting(self, pixels):
        calls.append(len(pixels))
        return original(self, pixels)

    monkeypatch.setattr(encode.Encoder, "encode_images", counting)
    return calls


# -- moves, renames, copies ---------------------------------------------------------------


def test_renamed_and_moved_photos_are_not_reencoded(cli, tiny_model, tmp_path, count_encodes):
    root = tmp_path / "pics"
    photos = make_pictures(root, 14)
    db = tmp_path / "lib.db"
    assert cli("index", str(root), "--db", str(db), "--model", f"local-dir:{tiny_model}").exit_code == 0
    before = rows(db)
    count_encodes.clear()

    (root / "moved").mkdir()
    renamed = {}
    for i, p in enumerate(photos[:10]):
        target = (root / "moved" / f"renamed{i}.jpg") if i % 2 else root / f"renamed{i}.jpg"
        p.rename(target)
        renamed[os.fsencode(p)] = os.fsencode(target)
    result = cli("index", str(root), "--db", str(db))
    assert result.exit_code == 0, result.stderr
    assert count_encodes == []  # the model never saw them again
    assert "0 added, 0 updated, 0 removed, 4 unchanged, 0 failed (10 moved, 0 copies recognised: not re-encoded)" in result.stderr
    after = rows(db)
    assert len(after) == 14
    for old, new in renamed.items():
        assert old not in after
        np.testing.assert_array_equal(after[new], before[old])


def test_copies_reuse_the_vector(cli, tiny_model, tmp_path, count_encodes):
    root = tmp_path / "pics"
    photos = make_pictures(root, 3)
    db = tmp_path / "lib.db"
    cli("index", str(root), "--db", str(db), "--model", f"local-dir:{tiny_model}")
    count_encodes.clear()
    (root / "backup").mkdir()
    (root / "backup" / "copy.jpg").write_bytes(photos[0].read_bytes())
    result = cli("index", str(root), "--db", str(db))
    assert count_encodes == []
    assert "1 added, 0 updated, 0 removed, 3 unchanged" in result.stderr
    stored = rows(db)
    np.testing.assert_array_equal(stored[os.fsencode(root / "backup" / "copy.jpg")], stored[os.fsencode(photos[0])])


def test_a_library_from_schema_1_is_migrated(cli, tiny_model, tmp_path):
    import sqlite_utils

    from photosearch import store as store_module

    db_path = tmp_path / "old.db"
    conn = sqlite3.connect(db_path, isolation_level=None)
    store_module._migrate_1(sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO meta VALUES ('generation', '0')")
    conn.close()
    make_pictures(tmp_path / "pics", 2)
    result = cli("index", str(tmp_path / "pics"), "--db", str(db_path), "--model", f"local-dir:{tiny_model}")
    assert result.exit_code == 0, result.stderr
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM photos WHERE fingerprint IS NOT NULL").fetchone()[0] == 2


def test_a_library_from_schema_2_gains_the_index_a_search_index_catches_up_with(cli, tiny_model, tmp_path):
    """Schema 3 indexes `vector_gen`, so that catching up on a few changed photos reads an
    index of a few bytes a row, not a table of vectors (gigabytes at millions of photos)."""
    from photosearch import store as store_module
    from photosearch.store import Store

    db = tmp_path / "lib.db"
    make_pictures(tmp_path / "pics", 3)
    assert cli("index", str(tmp_path / "pics"), "--db", str(db), "--model", f"local-dir:{tiny_model}").exit_code == 0
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP INDEX photos_vector_gen")  # the library as schema 2 left it
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    old = Store(Store._connect(db, read_only=True), db)  # as on a read-only disk: never migrated
    assert len(old.photo_ids()) == 3 and len(old.vectors_written_after(0)[0]) == 3
    old.close()

    make_pictures(tmp_path / "pics", 5)  # 2 more photos, then catch up
    result = cli("index", str(tmp_path / "pics"), "--db", str(db), "--model", f"local-dir:{tiny_model}")
    assert result.exit_code == 0 and "2 added" in result.stderr, result.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION
    plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN SELECT id FROM photos INDEXED BY photos_vector_gen WHERE vector_gen > 1"))
    assert "COVERING INDEX photos_vector_gen" in plan
    conn.close()
    found = cli("query", "a photo", "--db", str(db), "-k", "10", "--json")
    assert found.exit_code == 0 and len(found.stdout.splitlines()) == 5


# -- crash safety -------------------------------------------------------------------------


def _state(db: Path, tiny_model: Path) -> tuple[dict, dict, list]:
    """(rows, FAISS contents by path, query results) of a library, via the product itself."""
    from photosearch import store as store_module
    from photosearch import vectors
    from photosearch.store import Store

    store = Store.open(db)
    faiss_contents = {}
    for kind in (vectors.PHOTOS, vectors.TILES) if store.holds_tiles() else (vectors.PHOTOS,):
        index = vectors.load(store, kind=kind).index
        per = store_module.TILE_IDS if kind == vectors.TILES else 1  # a tile's entry id: photo id * TILE_IDS + tile
        entries, _ = store.entries(tiles=kind == vectors.TILES)
        paths = {i: p.path for i, p in store.photos_by_id((entries // per).tolist()).items()}
        faiss_contents |= {(kind, paths[int(e) // per], int(e) % per): index.reconstruct(int(e)) for e in entries}
    store.close()
    results = []
    for text in ("a red square", "something blue"):
        proc = subprocess.run(
            [sys.executable, "-m", "photosearch", "query", text, "-k", "10", "--db", str(db)],
            capture_output=True, cwd=REPO, timeout=120, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        results.append([(r["path"], r["score"]) for r in map(json.loads, proc.stdout.decode().splitlines())])
    return rows(db), faiss_contents, results


def test_killing_index_at_random_moments_loses_nothing(tiny_model, tmp_path):
    """SIGKILL at 20 random moments (start-up, encoding, commits, FAISS save), with the folder
    changing between runs; then one run to finish must leave exactly what a clean run leaves."""
    folder = tmp_path / "pics"
    make_pictures(folder, 40, seed=7)
    command = [sys.executable, "-m", "photosearch", "index", str(folder), "--model", f"local-dir:{tiny_model}", "--batch-size", "4", "-q"]
    db = tmp_path / "killed.db"
    # fp32: in bf16 a photo's vector depends on which photos share its batch (oneDNN picks
    # kernels by batch size; up to 2e-3 per component, cosine > 0.9999), and a resumed run
    # batches differently. This test is about what a kill loses, so it compares exactly.
    env = dict(os.environ, PHOTOSEARCH_PRECISION="fp32")

    started = time.monotonic()
    subprocess.run([*command, "--db", str(tmp_path / "timing.db")], cwd=REPO, env=env, check=True, timeout=300)
    full_run = time.monotonic() - started

    rng = random.Random(20261123)
    kills = 0
    for attempt in range(60):
        if kills == 20:
            break
        proc = subprocess.Popen([*command, "--db", str(db)], cwd=REPO, env=env, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, full_run))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        finished = proc.wait() == 0
        if db.exists():  # whatever moment it died at, the library is whole
            conn = sqlite3.connect(db)
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            conn.close()
        if finished or attempt % 4 == 3:  # new work for the next run: new, renamed, deleted photos
            make_pictures(folder, 6, seed=100 + attempt, prefix=f"new{attempt:02d}_")
            existing = sorted(folder.glob("*.jpg"))
            existing[rng.randrange(len(existing))].rename(folder / f"moved{attempt:02d}.jpg")
            existing[rng.randrange(len(existing))].unlink(missing_ok=True)
    assert kills == 20
    subprocess.run([*command, "--db", str(db)], cwd=REPO, env=env, check=True, timeout=300)
    clean = tmp_path / "clean.db"
    subprocess.run([*command, "--db", str(clean)], cwd=REPO, env=env, check=True, timeout=300)
    assert list(tmp_path.glob("killed.db*.faiss.*.tmp")) == []  # half-written saves are cleaned up

    clean_rows, clean_faiss, clean_results = _state(clean, tiny_model)
    got_rows, got_faiss, got_results = _state(db, tiny_model)
    assert sorted(got_rows) == sorted(clean_rows)
    for path, vector in clean_rows.items():
        np.testing.assert_allclose(got_rows[path], vector, atol=1e-5)
    assert sorted(got_faiss) == sorted(clean_faiss)  # the same entries in both indexes
    for key, vector in clean_faiss.items():
        np.testing.assert_allclose(got_faiss[key], vector, atol=1e-5)
    for got, want in zip(got_results, clean_results, strict=True):
        assert [p for p, _ in got] == [p for p, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)


# -- concurrency --------------------------------------------------------------------------


def test_queries_run_without_errors_while_an_index_run_writes(cli, tiny_model, tmp_path):
    from photosearch.store import WriterLock

    db = tmp_path / "lib.db"
    make_pictures(tmp_path / "first", 4)
    assert cli("index", str(tmp_path / "first"), "--db", str(db), "--model", f"local-dir:{tiny_model}").exit_code == 0
    make_pictures(tmp_path / "more", 60, seed=3)
    writer = subprocess.Popen(
        [sys.executable, "-m", "photosearch", "index", str(tmp_path / "more"), "--db", str(db), "--batch-size", "2", "-q"],
        cwd=REPO,
    )
    seen_counts, errors = [], []
    deadline = time.monotonic() + 240
    while writer.poll() is None and time.monotonic() < deadline:
        result = cli("query", "a shape", "-k", "100", "--db", str(db))
        if result.exit_code != 0:
            errors.append(result.stderr)
        seen_counts.append(len(result.stdout.splitlines()))
    assert writer.wait(timeout=60) == 0
    assert errors == []
    assert seen_counts and min(seen_counts) >= 4 and seen_counts == sorted(seen_counts)
    assert len(cli("query", "a shape", "-k", "100", "--db", str(db)).stdout.splitlines()) == 64
    with WriterLock(db):  # a reader never needs the writer's lock
        assert cli("query", "a shape", "--db", str(db)).exit_code == 0


def test_wait_flag_waits_for_the_other_writer(cli, tiny_model, tmp_path):
    from photosearch.store import WriterLock

    db = tmp_path / "lib.db"
    make_pictures(tmp_path / "pics", 2)
    lock = WriterLock(db)
    lock.__enter__()
    threading.Timer(1.0, lock.__exit__, args=(None, None, None)).start()
    started = time.monotonic()
    result = cli("index", str(tmp_path / "pics"), "--db", str(db), "--model", f"local-dir:{tiny_model}", "--wait")
    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - started >= 0.9


# -- storage faults -----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 320 KiB tmpfs (needs root, as on our machines and CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mount)], capture_output=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_keeps_what_was_indexed(cli, tiny_model, tmp_path, small_disk):
    db = small_disk / "lib.db"
    make_pictures(tmp_path / "a", 5)
    assert cli("index", str(tmp_path / "a"), "--db", str(db), "--model", f"local-dir:{tiny_model}").exit_code == 0
    make_pictures(tmp_path / "b", 400, seed=9)
    result = cli("index", str(tmp_path / "b"), "--db", str(db), "-q")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: cannot write the library {db}: the disk is full; nothing indexed so far was lost. "
        "Hint: free some space (or move the library with --db) and run again to finish.\n"
    )
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    kept = rows(db)
    assert all(os.fsencode(p) in kept for p in (tmp_path / "a").iterdir())
    query = cli("query", "x", "-k", "1000", "--db", str(db))
    assert query.exit_code == 0
    assert len(query.stdout.splitlines()) == len(kept)


def test_read_only_library_still_answers_queries(cli, tiny_model, tmp_path, small_disk):
    db = small_disk / "lib.db"
    make_pictures(tmp_path / "a", 3)
    assert cli("index", str(tmp_path / "a"), "--db", str(db), "--model", f"local-dir:{tiny_model}").exit_code == 0
    expected = cli("query", "x", "--db", str(db)).stdout
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    make_pictures(tmp_path / "b", 2)
    result = cli("index", str(tmp_path / "b"), "--db", str(db))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: cannot write the library {db}: it is read-only. "
        "Hint: queries still work; to index, make it writable or use --db PATH elsewhere.\n"
    )
    query = cli("query", "x", "--db", str(db))
    assert query.exit_code == 0 and query.stdout == expected


# -- hostile folders ----------------------------------------------------------------------


def test_fifo_named_jpg_is_never_opened(cli, tiny_model, tmp_path):
    root = tmp_path / "pics"
    make_pictures(root, 2)
    os.mkfifo(root / "pipe.jpg")  # opening it would block forever
    result = cli("index", str(root), "--db", str(tmp_path / "lib.db"), "--model", f"local-dir:{tiny_model}")
    assert result.exit_code == 0
    assert "2 added" in result.stderr


def test_symlinks_dangling_and_looping(cli, tiny_model, tmp_path):
    root = tmp_path / "pics"
    make_pictures(root, 2)
    (root / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "loop").symlink_to(root)
    db = str(tmp_path / "lib.db")
    plain = cli("index", str(root), "--db", db, "--model", f"local-dir:{tiny_model}")
    assert plain.exit_code == 0 and "2 added" in plain.stderr and "skipping" not in plain.stderr
    followed = cli("index", str(root), "--db", db, "--follow-symlinks")
    assert followed.exit_code == 0
    assert f"skipping {root / 'dangling.jpg'}: No such file or directory" in followed.stderr
    assert f"skipping {root / 'loop'}: folder already visited (symlink loop?), skipped" in followed.stderr


def test_unreadable_subfolder_is_reported_and_its_photos_kept(cli, tiny_model, tmp_path, monkeypatch):
    """The walk reports a folder it may not read, goes on, and doesn't treat the photos it
    couldn't see as deleted. (We run as root, who reads everything, so the kernel's answer
    for a folder without permission is played by a stand-in for os.scandir.)"""
    from photosearch import scan as scan_module

    root = tmp_path / "pics"
    make_pictures(root / "open", 2)
    make_pictures(root / "locked", 2, prefix="secret")
    db = str(tmp_path / "lib.db")
    assert "4 added" in cli("index", str(root), "--db", db, "--model", f"local-dir:{tiny_model}").stderr

    real_scandir = os.scandir
    locked = os.fsencode(root / "locked")

    def scandir(path):
        if path == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(scan_module.os, "scandir", scandir)
    result = cli("index", str(root), "--db", db)
    assert result.exit_code == 0, result.stderr
    assert f"skipping {root / 'locked'}: Permission denied" in result.stderr
    assert "0 added, 0 updated, 0 removed, 2 unchanged" in result.stderr
    assert len(rows(Path(db))) == 4


def test_very_deep_tree(cli, tiny_model, tmp_path):
    deep = tmp_path / "pics"
    for i in range(120):
        deep = deep / f"d{i}"
    make_pictures(deep, 1)
    result = cli("index", str(tmp_path / "pics"), "--db", str(tmp_path / "lib.db"), "--model", f"local-dir:{tiny_model}")
    assert result.exit_code == 0 and "1 added" in result.stderr


def _index_with_job(db: Path, root: Path, tiny_model: Path, job, **kwargs):
    from photosearch.config import ModelSpec
    from photosearch.indexer import index_folders
    from photosearch.store import Store

    store = Store.open(db, create=True)
    try:
        return index_folders(
            store, [os.fsencode(root)], requested_model=ModelSpec(f"local-dir:{tiny_model}", None), device="cpu",
            prepare_job=job, **kwargs,
        )
    finally:
        store.close()


def test_file_deleted_or_rewritten_during_indexing(cli, tiny_model, tmp_path):
    from tests.support import jobs

    root = tmp_path / "pics"
    make_pictures(root, 2)
    vanish, rewrite = make_pictures(root, 1, prefix="vanish")[0], make_pictures(root, 1, prefix="rewrite", seed=3)[0]
    db = tmp_path / "lib.db"
    summary = _index_with_job(db, root, tiny_model, jobs.racing)
    assert summary.failures == [(os.fsencode(vanish), "file vanished before it could be read")]
    assert (summary.added, summary.failed) == (3, 1)
    second = cli("index", str(root), "--db", str(db))
    assert second.exit_code == 0, second.stderr
    assert "0 added, 1 updated, 0 removed, 2 unchanged" in second.stderr  # the rewritten file
    assert sorted(rows(db)) == sorted(os.fsencode(p) for p in root.iterdir())
    assert os.fsencode(rewrite) in rows(db)
    assert cli("failures", "--db", str(db)).stdout == ""  # the vanished file left no record


def test_a_file_that_hangs_the_decoder_is_skipped_after_the_time_limit(tiny_model, tmp_path):
    from tests.support import jobs

    root = tmp_path / "pics"
    make_pictures(root, 5)
    make_pictures(root, 1, prefix="hang")
    started = time.monotonic()
    summary = _index_with_job(tmp_path / "lib.db", root, tiny_model, jobs.hang_on_marked, decode_timeout=2.0)
    assert time.monotonic() - started < 60
    assert summary.added == 5
    assert summary.failures == [(os.fsencode(root / "hang000.jpg"), "decoding took longer than 2 s; skipped")]


def test_memory_stays_bounded_on_12_megapixel_photos(tiny_model, tmp_path):
    """12 MP JPEGs are decoded at reduced scale in the workers: no process of the run comes
    near the 1.5 GB the product allows itself (model, torch, ONNX export of the text tower
    included), however many photos are queued."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "big"
    folder.mkdir()
    tile = rng.integers(0, 255, (750, 1000, 3), dtype=np.uint8)  # detail, so decoding is real work
    from PIL import Image

    for i in range(16):
        Image.fromarray(np.tile(np.roll(tile, i * 37, axis=1), (4, 4, 1))).save(folder / f"p{i}.jpg", quality=90)
    probe = (
        "import resource, subprocess, sys\n"
        f"subprocess.run([sys.executable, '-m', 'photosearch', 'index', {str(folder)!r}, '--db', {str(tmp_path / 'lib.db')!r},"
        f" '--model', 'local-dir:{tiny_model}', '-q'], check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"  # KiB, the largest child
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    peak_mib = int(proc.stdout.strip()) / 1024
    assert peak_mib < 1430, f"peak RSS {peak_mib:.0f} MiB"  # 1.5 GB
    assert len(rows(tmp_path / "lib.db")) == 16


def test_ctrl_c_during_index_stops_at_once_and_keeps_what_was_stored(tiny_model, tmp_path):
    """SIGINT while batches are being encoded (two at once on a CPU): one line, exit code 130,
    promptly; the photos already stored stay, and the next run does only the rest."""
    folder = tmp_path / "pics"
    make_pictures(folder, 300, seed=11)
    db = tmp_path / "lib.db"
    command = [sys.executable, "-m", "photosearch", "index", str(folder), "--model", f"local-dir:{tiny_model}",
               "--batch-size", "2", "--db", str(db)]  # fmt: skip
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    stored = 0
    while stored == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            stored = conn.execute("SELECT COUNT(*) FROM photos").fetchone()[0]
            conn.close()
        except sqlite3.Error:
            pass  # not created yet, or being written
    assert stored > 0 and proc.poll() is None, "the run ended before it could be interrupted"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 5
    assert proc.returncode == 130, stderr
    assert stderr.decode().strip().splitlines()[-1] == "Interrupted."
    kept = rows(db)
    assert 0 < len(kept) < 300

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, check=True, timeout=300)
    assert f"{300 - len(kept)} added" in rerun.stderr.decode(), rerun.stderr
    after = rows(db)
    assert len(after) == 300
    for path, vector in kept.items():  # what the interrupted run stored is kept as it was
        np.testing.assert_array_equal(after[path], vector)
