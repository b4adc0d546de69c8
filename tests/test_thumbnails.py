"""Thumbnails: made once (by the index run's workers or on first request), upright, cached by
content, never served for a photo that changed or vanished."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.cli import REPO
from tests.support.pictures import make_pictures

RED, BLUE = (230, 20, 20), (20, 20, 230)


def thumbnails_folder(home: Path) -> Path:
    return home / "data" / "cache" / "thumbnails"


def library(tiny_model=None):
    from photosearch import Library

    return Library.open(model=f"local-dir:{tiny_model}" if tiny_model else None)


def photo_id(lib, path: Path) -> int:
    return next(p.id for p in list(lib.photos()) if p.path == path)


def save_big(path: Path, size=(1600, 1200), colour=(40, 160, 90)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    img.paste(RED, (0, 0, size[0] // 4, size[1] // 4))  # a marked corner, to see which way is up
    img.save(path, quality=92)
    return path


def save_sideways(path: Path) -> Path:
    """A phone photo held upright: stored as 800×400 landscape pixels, EXIF orientation 6
    (rotate 90° clockwise to show). The stored top-left quarter is red, the rest blue."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (800, 400), BLUE)
    img.paste(RED, (0, 0, 400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, quality=95, exif=exif)
    return path


def mean_colour(img: Image.Image, box) -> np.ndarray:
    return np.asarray(img.crop(box).convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)


def test_index_with_thumbnails_makes_one_per_photo_at_most_320_px(cli, tiny_model, tmp_path, isolated_home):
    folder = tmp_path / "pics"
    small = make_pictures(folder, 4)  # 120-320 px: never scaled up
    big = [save_big(folder / "big.jpg"), save_big(folder / "tall.jpg", size=(900, 1800))]
    Image.open(big[0]).save(folder / "big.png")
    result = cli("index", str(folder), "--model", f"local-dir:{tiny_model}", "--thumbnails")
    assert result.exit_code == 0, result.stderr
    assert "7 added" in result.stderr and "thumbnail" not in result.stderr
    lib = library()
    made = sorted(thumbnails_folder(isolated_home).glob("*/*.jpg"))
    assert len(made) == 7
    for photo in list(lib.photos()):
        path = lib.thumbnail(photo)
        assert path.parent.parent == thumbnails_folder(isolated_home) and path in made
        with Image.open(path) as thumb:
            assert thumb.format == "JPEG"
            w, h = thumb.size
        if photo.path in small:
            assert (w, h) == (photo.width, photo.height)
        else:
            assert max(w, h) == 320
            assert abs(w / h - photo.width / photo.height) < 0.02
    with Image.open(lib.thumbnail(photo_id(lib, folder / "big.jpg"))) as thumb:
        assert thumb.size == (320, 240)
        assert mean_colour(thumb, (0, 0, 60, 45)) == pytest.approx(RED, abs=12)  # top-left stays top-left


@pytest.mark.parametrize("made_by", ["index workers", "first request"])
def test_thumbnail_of_an_exif_rotated_photo_is_upright(cli, tiny_model, tmp_path, made_by):
    photo = save_sideways(tmp_path / "pics" / "portrait.jpg")
    extra = ["--thumbnails"] if made_by == "index workers" else []
    assert cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tiny_model}", *extra).exit_code == 0
    lib = library()
    with Image.open(lib.thumbnail(photo_id(lib, photo))) as thumb:
        assert thumb.size == (160, 320)  # portrait, as the phone showed it
        # Rotated 90° clockwise, the stored top-left quarter lands in the top-right quarter.
        assert mean_colour(thumb, (90, 10, 150, 150)) == pytest.approx(RED, abs=12)
        for box in ((10, 10, 70, 150), (10, 170, 70, 310), (90, 170, 150, 310)):
            assert mean_colour(thumb, box) == pytest.approx(BLUE, abs=12)


def test_moved_photo_keeps_its_thumbnail(cli, tiny_model, tmp_path):
    folder = tmp_path / "pics"
    photo = save_big(folder / "a.jpg")
    make_pictures(folder, 2)
    assert cli("index", str(folder), "--model", f"local-dir:{tiny_model}", "--thumbnails").exit_code == 0
    lib = library()
    before = lib.thumbnail(photo_id(lib, photo))
    made_at = before.stat().st_mtime_ns
    moved = folder / "sub" / "renamed.jpg"
    moved.parent.mkdir()
    photo.rename(moved)
    result = cli("index", str(folder), "--thumbnails")
    assert "1 moved" in result.stderr, result.stderr
    lib = library()
    after = lib.thumbnail(photo_id(lib, moved))
    assert after == before and after.stat().st_mtime_ns == made_at  # the same file, not made again
    assert len(list(before.parent.parent.glob("*/*.jpg"))) == 3


def test_edited_photo_is_refused_and_its_old_thumbnail_never_served(cli, tiny_model, tmp_path):
    from photosearch.thumbnails import PhotoChangedError

    folder = tmp_path / "pics"
    photo = save_big(folder / "a.jpg")
    assert cli("index", str(folder), "--model", f"local-dir:{tiny_model}", "--thumbnails").exit_code == 0
    lib = library()
    pid = photo_id(lib, photo)
    old = lib.thumbnail(pid)
    save_big(photo, colour=(250, 250, 0))  # edited: new content, new size and mtime
    with pytest.raises(PhotoChangedError, match="changed since it was indexed"):
        lib.thumbnail(pid)
    # Same size, new content: the mtime tells.
    data = bytearray(photo.read_bytes())
    data[-100] ^= 0xFF
    photo.write_bytes(bytes(data))
    with pytest.raises(PhotoChangedError):
        lib.thumbnail(pid)
    with pytest.raises(PhotoChangedError):
        lib.open_original(pid)
    # Re-indexed, it gets a thumbnail of what it is now.
    assert cli("index", str(folder)).exit_code == 0
    lib = library()
    new = lib.thumbnail(photo_id(lib, photo))
    assert new != old
    with Image.open(new) as thumb:
        assert mean_colour(thumb, (200, 100, 320, 240)) == pytest.approx((250, 250, 0), abs=12)


def test_deleted_photo_is_gone(cli, tiny_model, tmp_path):
    from photosearch.thumbnails import PhotoGoneError

    photo = save_big(tmp_path / "pics" / "a.jpg")
    assert cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tiny_model}", "--thumbnails").exit_code == 0
    lib = library()
    pid = photo_id(lib, photo)
    photo.unlink()
    with pytest.raises(PhotoGoneError, match="is gone from"):
        lib.thumbnail(pid)


@pytest.mark.parametrize("cached", [True, False])
def test_photo_replaced_by_a_symlink_to_another_file_is_refused(cli, tiny_model, tmp_path, isolated_home, cached):
    from photosearch.thumbnails import PhotoChangedError

    folder = tmp_path / "pics"
    photo = save_big(folder / "a.jpg")
    (tmp_path / "elsewhere").mkdir()
    secret = save_big(tmp_path / "elsewhere" / "secret.jpg", size=(1700, 1100), colour=(0, 0, 0))
    extra = ["--thumbnails"] if cached else []
    assert cli("index", str(folder), "--model", f"local-dir:{tiny_model}", *extra).exit_code == 0
    lib = library()
    pid = photo_id(lib, photo)
    photo.unlink()
    photo.symlink_to(secret)
    with pytest.raises(PhotoChangedError):
        lib.thumbnail(pid)
    with pytest.raises(PhotoChangedError):
        lib.open_original(pid)
    # Even a link to a file forged to the recorded size and mtime is caught by the content
    # check before its pixels are read.
    recorded = lib.file_facts(pid)
    forged = tmp_path / "elsewhere" / "forged.jpg"
    forged.write_bytes((secret.read_bytes() + b"\0" * recorded.size)[: recorded.size])
    os.utime(forged, ns=(recorded.mtime_ns, recorded.mtime_ns))
    photo.unlink()
    photo.symlink_to(forged)
    with pytest.raises(PhotoChangedError):
        lib.open_original(pid)
    if cached:  # what is cached shows the photo that was indexed, never the forged file
        with Image.open(lib.thumbnail(pid)) as thumb:
            assert mean_colour(thumb, (200, 100, 320, 240)) == pytest.approx((40, 160, 90), abs=12)
    else:
        with pytest.raises(PhotoChangedError):
            lib.thumbnail(pid)
        assert list(thumbnails_folder(isolated_home).glob("*/*.jpg")) == []


def test_unwritable_thumbnails_folder_warns_and_index_still_succeeds(cli, tiny_model, tmp_path, isolated_home):
    from photosearch.errors import LibraryError

    make_pictures(tmp_path / "pics", 3)
    blocked = thumbnails_folder(isolated_home)
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the thumbnails folder should be")  # unwritable even as root
    result = cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tiny_model}", "--thumbnails")
    assert result.exit_code == 0
    assert f"warning: no thumbnails this run: cannot write thumbnails in {blocked}" in result.stderr
    assert "Hint: make the folder writable, or point PHOTOSEARCH_CACHE at one that is." in result.stderr
    assert "3 added" in result.stderr
    lib = library()
    with pytest.raises(LibraryError, match="cannot write a thumbnail"):
        lib.thumbnail(next(iter(lib.photos())))


def test_a_thumbnail_that_fails_is_reported_and_the_photo_stays_indexed(cli, tiny_model, tmp_path, isolated_home):
    from photosearch.scan import content_fingerprint

    folder = tmp_path / "pics"
    photos = make_pictures(folder, 3)
    fingerprint = content_fingerprint(photos[1])
    (thumbnails_folder(isolated_home)).mkdir(parents=True)
    (thumbnails_folder(isolated_home) / fingerprint[:2]).write_text("in the way")
    result = cli("index", str(folder), "--model", f"local-dir:{tiny_model}", "--thumbnails")
    assert result.exit_code == 0
    assert f"no thumbnail for {photos[1]}: cannot write a thumbnail in" in result.stderr
    assert "3 added, 0 updated, 0 removed, 0 unchanged, 0 failed; 1 without a thumbnail." in result.stderr
    assert len(list(thumbnails_folder(isolated_home).glob("*/*.jpg"))) == 2
    assert cli("failures").stdout == ""


def test_thumbnails_flag_fills_in_unchanged_photos_in_the_workers(cli, tiny_model, tmp_path, isolated_home):
    from photosearch.results import IndexEvent

    folder = tmp_path / "pics"
    photos = make_pictures(folder, 5)
    assert cli("index", str(folder), "--model", f"local-dir:{tiny_model}").exit_code == 0
    assert not thumbnails_folder(isolated_home).exists()  # the default: made on first request
    lib = library()
    first = lib.thumbnail(photo_id(lib, photos[0]))  # one made on request already
    db = isolated_home / "data" / "library.db"
    conn = sqlite3.connect(db)  # one whose file no longer matches its record: its thumbnail fails
    conn.execute("UPDATE photos SET fingerprint = ? WHERE path = ?", ("0" * 64, os.fsencode(photos[1])))
    conn.commit()
    conn.close()
    events: list[IndexEvent] = []
    summary = lib.index(folder, thumbnails=True, on_event=events.append)
    assert summary.unchanged == 5 and summary.failed == 0
    progress = [(e.done, e.total) for e in events if e.kind == "thumbnails"]
    assert progress == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    failed = [(e.path, e.reason) for e in events if e.kind == "thumbnail-failed"]
    assert failed == [(os.fsencode(photos[1]), "the file changed since it was indexed")]
    assert len(list(thumbnails_folder(isolated_home).glob("*/*.jpg"))) == 4
    assert first.exists()
    # Nothing left to do: the next run lists the folder and starts no workers.
    events.clear()
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM photos WHERE path = ?", (os.fsencode(photos[1]),))
    conn.commit()
    conn.close()
    photos[1].unlink()
    lib.index(folder, thumbnails=True, on_event=events.append)
    assert [e for e in events if e.kind.startswith("thumbnail")] == []


def test_a_write_killed_midway_leaves_no_thumbnail_and_its_leftover_is_cleaned(tmp_path, monkeypatch):
    from photosearch import thumbnails

    target = tmp_path / "thumbs" / "ab" / "abcd-320.jpg"
    data = thumbnails.render(Image.new("RGB", (640, 480), RED))

    def killed(src, dst):
        raise KeyboardInterrupt  # the process dies between writing the file and naming it

    monkeypatch.setattr(thumbnails.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        thumbnails.store(target, data)
    monkeypatch.undo()
    assert not target.exists()
    (leftover,) = target.parent.iterdir()
    assert leftover.name.startswith(".tmp-")
    assert thumbnails.present(tmp_path / "thumbs") == set()  # never listed as a thumbnail
    assert leftover.exists()  # young: maybe another writer's, still at work
    assert thumbnails.present(tmp_path / "thumbs", leftover_age_s=0) == set()
    assert not leftover.exists()
    thumbnails.store(target, data)
    assert thumbnails.present(tmp_path / "thumbs") == {"ab/abcd-320.jpg"}


def test_killing_an_index_run_leaves_only_whole_thumbnails(tiny_model, tmp_path):
    folder = tmp_path / "pics"
    for i in range(16):
        save_big(folder / f"p{i:02d}.jpg", size=(1200 + 8 * i, 900), colour=(i * 10, 100, 200 - i * 5))
    home = tmp_path / "home"
    made = home / "cache" / "thumbnails"
    env = dict(os.environ, PHOTOSEARCH_HOME=str(home))
    command = [sys.executable, "-m", "photosearch", "index", str(folder), "--model", f"local-dir:{tiny_model}", "--thumbnails", "-q"]
    rng = random.Random(13)
    seen = 0
    for attempt in range(3):
        proc = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(1.5, 3.0))
        os.killpg(proc.pid, signal.SIGKILL)  # the workers too, wherever they are
        proc.wait()
        for path in made.glob("*/[!.]*"):
            with Image.open(path) as thumb:
                thumb.load()  # a truncated JPEG raises here
                assert max(thumb.size) == 320
            seen += 1
        if attempt == 1:  # the next kill lands in the pass over unchanged photos
            for path in made.glob("*/[!.]*"):
                path.unlink()
    assert seen > 0  # the kills did land while thumbnails were being made
    subprocess.run(command, cwd=REPO, env=env, check=True, timeout=300)
    assert len(list(made.glob("*/[!.]*"))) == 16


@pytest.mark.parametrize("model_input", [224, 256])
def test_thumbnails_dont_change_what_real_models_see(tmp_path, model_input):
    """The workers decode what a thumbnail needs when thumbnails are on: for 224 px inputs and
    up that is the decode they make anyway, so the model gets the very same pixels."""
    from photosearch.scan import PhotoFile
    from photosearch.workers import Prepare, prepare_one

    for size in ((4000, 3000), (1920, 1080), (900, 1600), (500, 400)):
        path = save_big(tmp_path / f"{size[0]}x{size[1]}.jpg", size=size)
        st = path.stat()
        file = PhotoFile(os.fsencode(path), st.st_size, st.st_mtime_ns)
        plain = prepare_one((file, False, Prepare(size=model_input), None))
        with_thumbnail = prepare_one((file, False, Prepare(size=model_input, thumbnails=str(tmp_path / "t")), None))
        assert with_thumbnail.thumbnail_error is None
        assert np.array_equal(plain.pixels, with_thumbnail.pixels)
        assert Prepare(size=model_input, thumbnails="x").decode_side() == model_input
    assert len(list((tmp_path / "t").glob("*/*.jpg"))) == 4
