"""`photosearch index`: walking, incremental re-indexing, deletions, bad files, exit codes."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.pictures import make_pictures


def library_rows(home: Path) -> dict[str, tuple]:
    conn = sqlite3.connect(home / "data" / "library.db")
    rows = {os.fsdecode(p): (s, m, e) for p, s, m, e in conn.execute("SELECT path, size, mtime_ns, embedding FROM photos")}
    conn.close()
    return rows


def test_index_stores_one_unit_vector_per_photo(cli, tiny_model, tmp_path, isolated_home):
    photos = make_pictures(tmp_path / "pics", 6)
    result = cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tiny_model}")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # stdout is for data; index has none
    assert "6 added, 0 updated, 0 removed, 0 unchanged, 0 failed" in result.stderr
    rows = library_rows(isolated_home)
    assert sorted(rows) == sorted(str(p) for p in photos)
    for _size, _mtime, blob in rows.values():
        vector = np.frombuffer(blob, dtype="<f4")
        assert vector.shape == (64,)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_walk_is_recursive_case_insensitive_and_skips_hidden(cli, tiny_model, tmp_path, isolated_home):
    root = tmp_path / "pics"
    make_pictures(root / "2019" / "summer", 2, prefix="deep")
    make_pictures(root, 1, prefix="upper", ext="JPG")
    make_pictures(root, 1, prefix="png", ext="png")
    make_pictures(root, 1, prefix="webp", ext="webp")
    make_pictures(root / ".hidden", 2, prefix="hidden")  # .thumbnails is skipped even with --include-hidden
    (root / "notes.txt").write_text("not a photo")
    result = cli("index", str(root), "--model", f"local-dir:{tiny_model}")
    assert result.exit_code == 0, result.stderr
    names = sorted(Path(p).name for p in library_rows(isolated_home))
    assert names == ["deep000.jpg", "deep001.jpg", "png000.png", "upper000.JPG", "webp000.webp"]

    result = cli("index", str(root), "--include-hidden")
    assert "2 added" in result.stderr
    assert len(library_rows(isolated_home)) == 7


def test_reindex_skips_unchanged_photos_and_reencodes_changed_ones(cli, tiny_model, tmp_path, isolated_home):
    photos = make_pictures(tmp_path / "pics", 5)
    cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tiny_model}")
    before = library_rows(isolated_home)

    result = cli("index", str(tmp_path / "pics"))
    assert result.exit_code == 0
    assert "0 added, 0 updated, 0 removed, 5 unchanged, 0 failed" in result.stderr
    assert library_rows(isolated_home) == before

    # Rewrite one photo with different content: it is re-encoded, the rest are not.
    make_pictures(tmp_path / "new", 1, seed=99)[0].replace(photos[2])
    result = cli("index", str(tmp_path / "pics"))
    assert "0 added, 1 updated, 0 removed, 4 unchanged, 0 failed" in result.stderr
    after = library_rows(isolated_home)
    assert after[str(photos[2])][2] != before[str(photos[2])][2]
    assert all(after[str(p)] == before[str(p)] for p in photos if p != photos[2])


def test_vanished_photos_are_dropped_from_library_and_results(cli, tiny_model, tmp_path, isolated_home):
    photos = make_pictures(tmp_path / "pics", 4)
    cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tiny_model}")
    photos[0].unlink()
    photos[3].unlink()
    result = cli("index", str(tmp_path / "pics"))
    assert "0 added, 0 updated, 2 removed, 2 unchanged, 0 failed" in result.stderr
    assert sorted(library_rows(isolated_home)) == sorted(str(p) for p in photos[1:3])
    result = cli("query", "anything", "--json", "-k", "10")
    assert {json.loads(line)["path"] for line in result.stdout.splitlines()} == {str(photos[1]), str(photos[2])}


def test_indexing_another_folder_keeps_the_first(cli, tiny_model, tmp_path, isolated_home):
    make_pictures(tmp_path / "a", 2, prefix="a")
    make_pictures(tmp_path / "b", 3, prefix="b")
    cli("index", str(tmp_path / "a"), "--model", f"local-dir:{tiny_model}")
    result = cli("index", str(tmp_path / "b"))
    assert "3 added, 0 updated, 0 removed, 0 unchanged" in result.stderr
    assert len(library_rows(isolated_home)) == 5


def test_bad_files_are_skipped_reported_and_not_retried(cli, tiny_model, tmp_path, isolated_home):
    root = tmp_path / "pics"
    make_pictures(root, 3)
    (root / "text.jpg").write_text("this is not a picture")
    (root / "empty.png").write_bytes(b"")
    good = make_pictures(tmp_path / "src", 1, seed=5)[0].read_bytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])

    result = cli("index", str(root), "--model", f"local-dir:{tiny_model}")
    assert result.exit_code == 3  # partial: some photos could not be indexed
    assert f"skipping {root / 'text.jpg'}: not a recognised image format" in result.stderr
    assert f"skipping {root / 'empty.png'}: not a recognised image format" in result.stderr
    assert f"skipping {root / 'truncated.jpg'}: " in result.stderr
    assert "3 added, 0 updated, 0 removed, 0 unchanged, 3 failed" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(library_rows(isolated_home)) == 3

    listed = cli("failures")
    assert sorted(line.split('"path": "')[1].split('"')[0] for line in listed.stdout.splitlines()) == sorted(
        str(root / n) for n in ("empty.png", "text.jpg", "truncated.jpg")
    )

    # Unchanged bad files are not retried; a fixed one is indexed.
    (root / "text.jpg").write_bytes(good)
    result = cli("index", str(root))
    assert result.exit_code == 0, result.stderr
    assert "1 added, 0 updated, 0 removed, 3 unchanged, 0 failed, 2 known bad" in result.stderr
    assert "skipping" not in result.stderr


def test_missing_folder_is_a_usage_error(cli, tmp_path):
    result = cli("index", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert result.stderr == f"Error: no such folder: {tmp_path / 'nope'}. Hint: check the path.\n"


def test_db_flag_and_env_choose_the_library(cli, tiny_model, tmp_path, monkeypatch):
    make_pictures(tmp_path / "pics", 2)
    db = tmp_path / "elsewhere" / "my.db"
    result = cli("index", str(tmp_path / "pics"), "--db", str(db), "--model", f"local-dir:{tiny_model}")
    assert result.exit_code == 0, result.stderr
    assert db.exists() and Path(str(db) + ".faiss").exists()
    monkeypatch.setenv("PHOTOSEARCH_DB", str(db))
    info = cli("info", "--json")
    assert f'"library": "{db}"' in info.stdout
    assert '"photos": 2' in info.stdout


def test_a_second_writer_is_told_the_library_is_busy(cli, tiny_model, tmp_path, isolated_home):
    from photosearch.store import WriterLock

    make_pictures(tmp_path / "pics", 1)
    library = isolated_home / "data" / "library.db"
    with WriterLock(library):
        result = cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tiny_model}")
    assert result.exit_code == 4
    assert result.stderr.startswith("Error: another photosearch process is writing to")
    assert "--wait" in result.stderr


def test_batches_encoded_in_parallel_each_land_on_their_own_photo(cli, tiny_model, tmp_path, isolated_home, monkeypatch):
    """On a CPU the indexer encodes two batches at once in threads and writes them in order;
    a mix-up between threads, or a lost tail, would give a photo another photo's vector."""
    import torch

    from photosearch import config
    from photosearch.model.encode import Encoder
    from photosearch.model.weights import resolve

    monkeypatch.setattr(config, "usable_cpus", lambda: 2)  # two batches at once on any machine
    monkeypatch.setenv("PHOTOSEARCH_PRECISION", "fp32")
    photos = make_pictures(tmp_path / "pics", 23)  # batches of 3 from `-b 6`, and a tail of 5 split in two
    threads_before = torch.get_num_threads()
    result = cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tiny_model}", "--batch-size", "6")
    assert result.exit_code == 0, result.stderr
    assert torch.get_num_threads() == threads_before  # the split is undone after the run
    rows = library_rows(isolated_home)
    assert sorted(rows) == sorted(str(p) for p in photos)

    encoder = Encoder(resolve(config.ModelSpec(f"local-dir:{tiny_model}", None)), "cpu", "fp32", parts=("image",))
    for path in photos:
        with Image.open(path) as img:
            alone = encoder.encode_images([encoder.preprocess(img.convert("RGB"))])[0]
        stored = np.frombuffer(rows[str(path)][2], dtype="<f4")
        assert float(stored @ alone) > 0.9999, path.name
