"""`photosearch watch`: a real watcher process, changes made to its folder, the library read
from this (another) process. Every wait is bounded."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.cli import REPO, run_cli
from tests.support.pictures import make_pictures

DEBOUNCE = "0.5"


class Watcher:
    """`photosearch watch` in its own process, its stderr lines collected as they come."""

    def __init__(self, folder: Path, db: Path, model: Path, *extra: str):
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "photosearch",
                "watch",
                str(folder),
                "--db",
                str(db),
                "--model",
                f"local-dir:{model}",
                "--debounce",
                DEBOUNCE,
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def batches(self) -> list[str]:
        """The lines of the batches after the catch-up pass."""
        return [
            line
            for line in self.lines
            if line.startswith("watch: ") and " in " in line and "caught up" not in line
        ]

    def wait_for_line(self, text: str, timeout: float = 60) -> None:
        wait_until(
            lambda: any(text in line for line in self.lines),
            timeout,
            f"no line with {text!r}: {self.lines}",
            self,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(5)
        return code


def wait_until(condition, timeout: float, message: str, watcher: Watcher | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if watcher is not None and watcher.process.poll() is not None:
            watcher._reader.join(5)
            pytest.fail(f"the watcher ended ({watcher.process.returncode}): {watcher.lines}")
        if time.monotonic() > deadline:
            pytest.fail(message)
        time.sleep(0.1)


def library_photos(db: Path) -> dict[str, object]:
    """The library's photos by path, read by this process (not the watcher)."""
    from photosearch import Library

    with Library.open(db) as library:
        return {str(p.path): p for p in library.photos()}


def library_failures(db: Path) -> list:
    from photosearch import Library

    with Library.open(db) as library:
        return library.failures()


@pytest.fixture
def watched(tmp_path, tiny_model):
    """A folder with two photos, and a watcher on it that has caught up."""
    folder, db = tmp_path / "pics", tmp_path / "lib.db"
    make_pictures(folder, 2)
    watcher = Watcher(folder, db, tiny_model)
    try:
        watcher.wait_for_line("caught up")
        yield folder, db, watcher
    finally:
        watcher.stop(signal.SIGKILL)


def test_watch_picks_up_added_modified_renamed_and_deleted_photos(watched, tmp_path):
    folder, db, watcher = watched
    assert set(library_photos(db)) == {str(folder / "photo000.jpg"), str(folder / "photo001.jpg")}

    added = make_pictures(tmp_path / "elsewhere", 1, seed=7, prefix="added")[0]
    shutil.copy(added, folder / "added.jpg")
    wait_until(
        lambda: str(folder / "added.jpg") in library_photos(db),
        10,
        "the added photo was not indexed",
        watcher,
    )

    replacement = make_pictures(tmp_path / "elsewhere", 1, seed=8, prefix="other")[0]
    shutil.copyfile(replacement, folder / "photo000.jpg")
    new_size = (folder / "photo000.jpg").stat().st_size
    wait_until(
        lambda: library_photos(db)[str(folder / "photo000.jpg")].size_bytes == new_size,
        10,
        "the modified photo was not re-indexed",
        watcher,
    )

    before = library_photos(db)[str(folder / "photo001.jpg")]
    os.rename(folder / "photo001.jpg", folder / "renamed.jpg")
    wait_until(
        lambda: str(folder / "renamed.jpg") in library_photos(db),
        10,
        "the renamed photo was not picked up",
        watcher,
    )
    photos = library_photos(db)
    assert str(folder / "photo001.jpg") not in photos
    assert (
        photos[str(folder / "renamed.jpg")].id == before.id
    )  # recognised by content: same row, same vector

    (folder / "added.jpg").unlink()
    wait_until(
        lambda: str(folder / "added.jpg") not in library_photos(db),
        10,
        "the deleted photo was not dropped",
        watcher,
    )

    # The watcher holds the writer lock: `index` is busy, queries answer.
    busy = run_cli("index", str(folder), "--db", str(db), timeout=60)
    assert busy.returncode == 4, busy.stderr
    found = run_cli("query", "a photo", "--json", "-k", "10", "--db", str(db), timeout=60)
    assert found.returncode == 0, found.stderr
    assert len(found.stdout.splitlines()) == 2

    assert watcher.stop(signal.SIGTERM) == 0
    assert watcher.lines[-1] == "watch: stopped."
    assert library_failures(db) == []


def test_a_burst_of_300_files_is_indexed_in_a_few_batches(watched, tmp_path):
    folder, db, watcher = watched
    burst = make_pictures(tmp_path / "burst", 300, seed=3, prefix="burst")
    before = len(watcher.batches())
    for path in burst:
        shutil.copy(path, folder / path.name)
    wait_until(lambda: len(library_photos(db)) == 302, 30, "the burst was not all indexed", watcher)
    time.sleep(2 * float(DEBOUNCE))  # any batch still to come
    batches = watcher.batches()[before:]
    assert 1 <= len(batches) <= 3, batches
    assert sum(int(line.split()[1]) for line in batches) == 300  # "watch: N added, …"


def test_a_half_written_photo_is_indexed_only_once_complete(watched, tmp_path):
    folder, db, watcher = watched
    data = make_pictures(tmp_path / "elsewhere", 1, seed=9, prefix="slow")[0].read_bytes()
    target = folder / "slow.jpg"
    with open(target, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        # Longer than the quiet period, and another photo arrives meanwhile: its batch runs
        # and must leave the half-written one alone.
        time.sleep(3 * float(DEBOUNCE))
        shutil.copy(
            make_pictures(tmp_path / "elsewhere", 1, seed=10, prefix="quick")[0],
            folder / "quick.jpg",
        )
        wait_until(
            lambda: str(folder / "quick.jpg") in library_photos(db),
            10,
            "the other photo was not indexed",
            watcher,
        )
        assert str(target) not in library_photos(db)
        assert library_failures(db) == []
        f.write(data[len(data) // 2 :])
    wait_until(
        lambda: str(target) in library_photos(db), 10, "the finished photo was not indexed", watcher
    )
    assert library_photos(db)[str(target)].size_bytes == len(data)
    assert library_failures(db) == []


def test_watch_killed_with_sigkill_loses_nothing_and_catches_up_next_time(
    watched, tmp_path, tiny_model
):
    folder, db, watcher = watched
    for path in make_pictures(tmp_path / "first", 5, seed=4, prefix="first"):
        shutil.copy(path, folder / path.name)
    wait_until(
        lambda: len(library_photos(db)) == 7, 10, "the first photos were not indexed", watcher
    )
    # Then killed in the middle of a batch, as likely as not.
    for path in make_pictures(tmp_path / "more", 60, seed=6, prefix="more"):
        shutil.copy(path, folder / path.name)
    time.sleep(float(DEBOUNCE) + 0.3)
    watcher.stop(signal.SIGKILL)
    assert len(library_photos(db)) >= 7  # everything committed is still there

    # While nothing watches: a photo added, one deleted.
    make_pictures(folder, 1, seed=5, prefix="while-stopped")
    (folder / "first000.jpg").unlink()
    again = Watcher(folder, db, tiny_model)
    try:
        again.wait_for_line("caught up")
        expected = {str(p) for p in folder.iterdir()}
        assert set(library_photos(db)) == expected
        assert len(expected) == 67
        assert library_failures(db) == []
    finally:
        assert again.stop(signal.SIGTERM) == 0


# -- the batching itself, with a made-up clock ----------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(kind: str, path: str, directory: bool = False):
    from types import SimpleNamespace

    return SimpleNamespace(event_type=kind, src_path=path, dest_path="", is_directory=directory)


def test_a_steady_trickle_of_changes_still_gets_a_batch_by_the_maximum_delay():
    from photosearch.watch import ChangeCollector

    clock = FakeClock()
    collector = ChangeCollector(1.0, 5.0, closes_reported=True, clock=clock)
    batches = []
    for i in range(20):  # one new photo every 0.6 s: never a second of quiet
        collector.dispatch(event("created", f"/p/{i}.jpg"))
        batch = collector.next_batch(timeout=0)
        if batch is not None:
            batches.append((clock.now, len(batch.changed)))
        clock.now += 0.6
    # Every 5 s (the maximum delay) a batch of what came in meanwhile.
    assert [round(at - 1000.0, 1) for at, _ in batches] == [5.4, 11.4]
    assert [n for _, n in batches] == [10, 10]


def test_only_changes_that_matter_are_collected_and_open_files_wait_for_their_close():
    from photosearch.watch import ChangeCollector

    clock = FakeClock()
    collector = ChangeCollector(1.0, 5.0, closes_reported=True, clock=clock)
    collector.dispatch(event("opened", "/p/a.jpg"))
    collector.dispatch(event("closed_no_write", "/p/a.jpg"))  # our own index pass reading it
    collector.dispatch(event("modified", "/p/notes.txt"))
    collector.dispatch(event("modified", "/p", directory=True))
    clock.now += 10
    assert collector.next_batch(timeout=0) is None

    collector.dispatch(event("modified", "/p/big.jpg"))  # being written
    clock.now += 10
    assert collector.next_batch(timeout=0) is None  # nothing settled yet
    collector.dispatch(event("created", "/p/small.jpg"))
    clock.now += 1.5
    batch = collector.next_batch(timeout=0)
    assert batch.changed == {b"/p/small.jpg"} and batch.unfinished == {b"/p/big.jpg"}
    collector.dispatch(event("closed", "/p/big.jpg"))
    clock.now += 1.5
    assert collector.next_batch(timeout=0).changed == {b"/p/big.jpg"}


def test_the_watcher_loads_its_model_once_for_all_its_passes(tmp_path, tiny_model, monkeypatch):
    """A watcher's passes are small and frequent: each reuses the encoder the first loaded."""
    from photosearch import Library, model

    loads = []
    real = model.load_image_encoder
    monkeypatch.setattr(model, "load_image_encoder", lambda *a, **k: loads.append(k["photos"]) or real(*a, **k))
    folder = tmp_path / "pics"
    make_pictures(folder, 2)
    stop, passes = threading.Event(), []

    def on_batch(batch):
        passes.append(batch.summary.added)
        if len(passes) < 3:  # one more photo after each pass
            make_pictures(folder, 1, seed=len(passes), prefix=f"new{len(passes)}-")
        else:
            stop.set()

    with Library.open(tmp_path / "lib.db", model=f"local-dir:{tiny_model}") as library:
        worker = threading.Thread(target=library.watch, args=(folder,), kwargs={"debounce": 0.3, "on_batch": on_batch, "stop": stop})
        worker.start()
        worker.join(timeout=120)
        stop.set()
        worker.join(timeout=30)
        assert passes == [2, 1, 1]
        assert loads == [2]  # loaded for the catch-up pass, reused after
        assert len(list(library.photos())) == 4
