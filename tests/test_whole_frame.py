"""Whole-frame embeddings: a shape at the edge of a wide or tall photo is found, a photo is
listed once however many tiles it has, and a library changes how it cuts photos in place.

The trained tiny CLIP, through the real index and search, on held-out pictures (public
seeds, tests/support/framing.py) whose shape sits outside the centre square.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import framing
from tests.support.cli import cli_json
from tests.support.train import trained_tiny_model

FRAMES = ("1:1", "4:3", "16:9", "3:1", "9:16")
OFF_CENTRE = tuple(f for f in FRAMES if f != "1:1")
PER_CLASS = 3
SEED = 20_261_202


@pytest.fixture(scope="module")
def trained() -> Path:
    return trained_tiny_model()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("framing") / "pictures"
    return folder, framing.write_folder(folder, FRAMES, per_class=PER_CLASS, seed=SEED)


@pytest.fixture(scope="module")
def libraries(tmp_path_factory, trained, pictures) -> dict[str, Path]:
    """One library of the pictures for each way of cutting them."""
    from photosearch import Library

    folder, _ = pictures
    root = tmp_path_factory.mktemp("libraries")
    made = {}
    for crops in ("centre", "letterbox", "mean", "max"):
        made[crops] = root / f"{crops}.db"
        with Library.open(made[crops], model=f"local-dir:{trained}") as library:
            summary = library.index(folder, crops=crops)
            assert summary.added == len(FRAMES) * 16 * PER_CLASS and summary.crops == crops
    return made


def _found(db: Path, labels: dict[str, str], frame: str, k: int = PER_CLASS) -> float:
    """The share of each class's pictures in `frame` that a query for the class puts in its
    top k (of the pictures in that frame), averaged over the 16 classes. With k = the
    pictures a class has, this is R-precision: stricter than the recall@10 of the bench
    (bench/whole_frame.py, docs/whole-frame.md), which a small set would make too easy."""
    from photosearch import Filters, Library

    shares = []
    with Library.open(db) as library:
        for wanted in sorted(set(labels.values())):
            hits = library.search(f"a {wanted}", k=k, filters=Filters(globs=[f"{frame.replace(':', 'x')}_*"]))
            found = [labels[Path(h.path).name] for h in hits]
            shares.append(found.count(wanted) / PER_CLASS)
    return float(np.mean(shares))


def test_the_centre_crop_misses_shapes_at_the_edges_and_whole_frame_ways_find_them(libraries, pictures):
    _, labels = pictures
    centre = {f: _found(libraries["centre"], labels, f) for f in OFF_CENTRE}
    tiles = {f: _found(libraries["max"], labels, f) for f in OFF_CENTRE}
    mean = {f: _found(libraries["mean"], labels, f) for f in OFF_CENTRE}
    assert np.mean(list(centre.values())) < 0.5, centre
    assert min(tiles.values()) >= 0.9, tiles
    # One vector a photo finds the usual frames as well; a 3:1 panorama's mean of 4 tiles
    # dilutes a shape in one of them (docs/whole-frame.md).
    assert min(mean[f] for f in ("4:3", "16:9", "9:16")) >= 0.85, mean


def test_square_photos_are_cut_the_same_every_way(libraries, pictures):
    """Every way gives a square photo the centre crop's vector, byte for byte."""
    _, labels = pictures
    stored = {}
    for crops, db in libraries.items():
        conn = sqlite3.connect(db)
        stored[crops] = {os.path.basename(os.fsdecode(p)): e for p, e in conn.execute("SELECT path, embedding FROM photos")}
        conn.close()
    squares = [name for name in labels if framing.frame_of(name) == "1:1"]
    assert len(squares) == 16 * PER_CLASS
    for name in squares:
        assert len({stored[crops][name] for crops in libraries}) == 1, name
    for crops in ("letterbox", "mean", "max"):
        assert _found(libraries[crops], labels, "1:1") == _found(libraries["centre"], labels, "1:1") == 1.0


def test_a_photo_is_listed_once_at_its_best_tile(libraries, pictures, trained):
    from photosearch import Library

    folder, labels = pictures
    db = libraries["max"]
    with Library.open(db) as library:
        everything = library.search("a red circle", k=10_000)
        assert len(everything) == len(labels)  # every photo once, however many tiles
        assert len({h.id for h in everything}) == len(everything)
        scores = [h.score for h in everything]
        assert scores == sorted(scores, reverse=True)
        info = library.info()
        assert info.crops == "max" and info.index_vectors == len(labels) < info.tile_index_vectors
    # The score is the best tile's: recompute it from the tiles stored in SQLite.
    from photosearch.store import Store

    store = Store.open(db)
    wide = next(h for h in everything if framing.frame_of(Path(h.path).name) == "3:1")
    tiles = store.tiles_of([wide.id])[wide.id]
    assert tiles.shape[0] == 4
    with Library.open(db) as library:
        from photosearch import query as q

        text = q.cached_text_vector(store, library._text_encoder_or_model, "a red circle", q.DEFAULT_TEMPLATES)
    assert abs(float((tiles @ text).max()) - wide.score) < 1e-4
    store.close()


def test_image_queries_duplicates_and_classify_use_one_vector_a_photo(tmp_path, trained, pictures, cli):
    import shutil

    from tests.support.synthetic import CLASSES, class_name

    folder, labels = pictures
    wide = sorted(n for n in labels if framing.frame_of(n) in ("16:9", "3:1"))
    mine = tmp_path / "photos"
    mine.mkdir()
    for name in wide:
        shutil.copy(folder / name, mine / name)
    shutil.copy(folder / wide[0], mine / "again.jpg")  # the same photo twice
    db = tmp_path / "lib.db"
    env = {"PHOTOSEARCH_DB": str(db)}
    result = cli("index", str(mine), "--db", str(db), "--model", f"local-dir:{trained}", "--crops", "max")
    assert result.exit_code == 0, result.stderr

    like = cli_json(db, env, "query", str(mine / wide[1]), "-k", "5")
    assert len({r["path"] for r in like}) == 5 and str(mine / wide[1]) not in {r["path"] for r in like}
    label = dict(labels, **{"again.jpg": labels[wide[0]]})
    assert sum(label[Path(r["path"]).name] == labels[wide[1]] for r in like) >= 2, like
    # A copy of an indexed photo, as a query, finds it first at cosine 1: image queries compare
    # photos' own vectors, not tiles.
    copy = tmp_path / "copy.jpg"
    shutil.copy(folder / wide[2], copy)
    first = cli_json(db, env, "query", str(copy), "-k", "1")[0]
    assert first["path"] == str(mine / wide[2]) and first["score"] > 0.999  # indexed in bf16, queried in fp32

    # The tiny model's 64-d space puts every picture of a class within 0.97: only a copy is
    # within 0.9999 of another.
    groups = cli_json(db, env, "duplicates", "--threshold", "0.9999")
    assert [sorted(Path(m["path"]).name for m in g["photos"]) for g in groups] == [sorted(["again.jpg", wide[0]])]

    # Tagged by the photo's own vector, the mean of its tiles: right for 16:9 photos (2
    # tiles); a 3:1 panorama's mean of 4 is the weaker case (docs/whole-frame.md).
    names = ",".join(class_name(*c) for c in CLASSES)
    tags = cli_json(db, env, "classify", "--labels", names)
    assert len(tags) == len(wide) + 1
    right = [t["label"] == label[Path(t["path"]).name] for t in tags if Path(t["path"]).name.startswith("16x9_")]
    assert len(right) == 16 * PER_CLASS and np.mean(right) >= 0.8, tags


def test_filters_narrow_a_tiled_search_before_the_top_k(libraries, pictures):
    from photosearch import Filters, Library

    _, labels = pictures
    with Library.open(libraries["max"]) as library:
        hits = library.search("a blue cross", k=7, filters=Filters(globs=["3x1_*"]))
    assert len(hits) == 7 and all(Path(h.path).name.startswith("3x1_") for h in hits)


def test_an_existing_library_changes_how_it_cuts_photos_in_place(tmp_path, trained, pictures, cli):
    """A library from before there was a choice (schema 1: centre crops) is upgraded by the
    next index run: the photos that aren't square are embedded again, the squares kept."""
    from photosearch import Library
    from photosearch import store as store_module

    folder, labels = pictures
    db = tmp_path / "old.db"
    with Library.open(db, model=f"local-dir:{trained}") as library:
        library.index(folder, crops="centre")
    before = _found(db, labels, "16:9")
    # Make it what an older photosearch left: schema 1, no record of how photos were cut.
    conn = sqlite3.connect(db)
    square_rows = dict(conn.execute("SELECT path, embedding FROM photos WHERE width = height"))
    conn.execute("ALTER TABLE photos DROP COLUMN crops")
    conn.execute("ALTER TABLE photos DROP COLUMN tiles")
    conn.execute("DROP INDEX photos_vector_gen")
    conn.execute("DELETE FROM meta WHERE key = 'crops'")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    result = cli("index", str(folder), "--db", str(db))
    assert result.exit_code == 0, result.stderr
    wide = sum(1 for n in labels if framing.frame_of(n) != "1:1")
    assert f"{wide} of the updated embedded again for --crops" in result.stderr
    assert _found(db, labels, "16:9") > before
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION
    assert dict(conn.execute("SELECT path, embedding FROM photos WHERE width = height")) == square_rows
    conn.close()

    # Settled: the next run has nothing to do; asking for another way does it again.
    again = cli("index", str(folder), "--db", str(db))
    assert "embedded again" not in again.stderr and f"{len(labels)} unchanged" in again.stderr
    back = cli("index", str(folder), "--db", str(db), "--crops", "centre")
    assert f"{wide} of the updated embedded again for --crops centre" in back.stderr
    assert abs(_found(db, labels, "16:9") - before) < 1e-9


def test_an_interrupted_change_is_finished_by_the_next_run(tmp_path, trained, pictures):
    from photosearch import Library

    folder, labels = pictures
    db = tmp_path / "lib.db"
    with Library.open(db, model=f"local-dir:{trained}") as library:
        library.index(folder, crops="centre")

    seen = []

    def stop_after_a_batch(event):
        if event.kind == "progress":
            seen.append(event.done)
            raise KeyboardInterrupt

    with Library.open(db) as library, pytest.raises(KeyboardInterrupt):
        library.index(folder, crops="max", batch_size=8, on_event=stop_after_a_batch)
    with Library.open(db) as library:
        summary = library.index(folder)  # no --crops: goes on as the interrupted run began
    wide = sum(1 for n in labels if framing.frame_of(n) != "1:1")
    assert summary.crops == "max" and 0 < summary.recut < wide
    assert summary.recut + seen[0] >= wide
    assert _found(db, labels, "3:1") >= 0.9


def test_the_cut_covers_the_whole_frame(tmp_path):
    """A stripe at each end of a panorama is in the first and the last tile, and in the
    letterbox, and in neither end of the centre crop."""
    from photosearch.model.cut import Cut, model_inputs, tile_count

    assert [tile_count(*s) for s in ((100, 100), (104, 100), (400, 300), (300, 200), (1920, 1080), (200, 100), (300, 100), (100, 400))] == [
        1, 1, 2, 2, 2, 3, 4, 5,
    ]
    picture = np.full((100, 300, 3), 128, np.uint8)
    picture[:, :12] = (255, 0, 0)  # red at the left end
    picture[:, -12:] = (0, 0, 255)  # blue at the right end
    image = Image.fromarray(picture)
    cut = Cut(size=64, fill=(123, 117, 104))

    def has(pixels, colour):
        return bool((np.abs(pixels.astype(int) - colour).sum(axis=2) < 60).any())

    centre = model_inputs(image, cut.with_crops("centre"))
    tiles = model_inputs(image, cut.with_crops("max"))
    boxed = model_inputs(image, cut.with_crops("letterbox"))
    assert len(centre) == 1 and not has(centre[0], (255, 0, 0)) and not has(centre[0], (0, 0, 255))
    assert len(tiles) == 4 and has(tiles[0], (255, 0, 0)) and has(tiles[-1], (0, 0, 255))
    assert all(t.shape == (64, 64, 3) for t in tiles)
    assert len(boxed) == 1 and has(boxed[0], (255, 0, 0)) and has(boxed[0], (0, 0, 255))
    assert tuple(boxed[0][0, 32]) == (123, 117, 104)  # padded with the model's mean colour


def test_bad_crops_are_refused_in_one_line(cli, tmp_path, trained):
    (tmp_path / "p").mkdir()
    result = cli("index", str(tmp_path / "p"), "--db", str(tmp_path / "x.db"), "--crops", "sides", "--model", f"local-dir:{trained}")
    assert result.exit_code == 2 and "sides" in result.stderr
    from photosearch import Library
    from photosearch.errors import UsageError

    with Library.open(tmp_path / "y.db", model=f"local-dir:{trained}") as library, pytest.raises(UsageError, match="crops"):
        library.index(tmp_path / "p", crops="sides")


def test_each_tile_is_what_the_centre_crop_of_that_part_of_the_frame_would_be():
    """The tiles come from one resize of the whole frame: the same pixels, to rounding, as
    open_clip's centre crop of each square part of the photo on its own (where the model's
    fidelity to open_clip is already tested: tests/test_fidelity.py)."""
    from photosearch.model.cut import Cut, model_input, model_inputs

    rng = np.random.default_rng(7)
    small = rng.integers(0, 256, (27, 48, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((1920, 1080), Image.Resampling.BICUBIC)  # detail at every scale
    tiles = model_inputs(image, Cut(size=224).with_crops("max"))
    assert len(tiles) == 2
    for tile, left in zip(tiles, (0, 1920 - 1080), strict=True):
        alone = model_input(image.crop((left, 0, left + 1080, 1080)), 224)
        diff = np.abs(tile.astype(int) - alone.astype(int))
        assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 3, (diff.mean(), diff.max())
