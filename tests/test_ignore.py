"""Ignore rules: the default junk folders, --exclude, nested .photosearchignore files, and
photos of the library that a new rule excludes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from photosearch import Library
from photosearch.ignore import IgnoreRules
from photosearch.scan import PhotoFile, ScanProblem, scan
from tests.support.pictures import make_pictures


def _found(root: Path, **options) -> list[str]:
    """The photos the walk finds under `root`, relative to it."""
    items = scan([os.fsencode(root)], **options)
    return sorted(os.path.relpath(os.fsdecode(i.path), root) for i in items if isinstance(i, PhotoFile))


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def _indexed(isolated_home: Path) -> list[str]:
    with Library.open(isolated_home / "data" / "library.db") as library:
        return sorted(p.path.name for p in library.photos())


@pytest.mark.parametrize("include_hidden", [False, True])
def test_default_junk_is_skipped_even_with_include_hidden(tmp_path, include_hidden):
    _touch(
        tmp_path,
        "keep.jpg",
        "._keep.jpg",  # AppleDouble
        "@eaDir/keep.jpg/SYNOPHOTO_THUMB_XL.jpg",  # Synology: not hidden, still skipped
        "2019/@eaDir/a.jpg",
        ".thumbnails/normal/a.png",
        "2019/.Trash-1000/files/a.jpg",
        ".hidden/a.jpg",
        "2019/b.jpg",
    )
    expected = ["2019/b.jpg", "keep.jpg"] + ([".hidden/a.jpg"] if include_hidden else [])
    assert _found(tmp_path, include_hidden=include_hidden) == sorted(expected)


def test_exclude_patterns_are_read_as_if_written_in_each_indexed_folder(tmp_path):
    _touch(tmp_path, "a.jpg", "b.png", "sub/c.png", "Screenshots/d.jpg", "sub/Screenshots/e.jpg", "2019/drafts/f.jpg", "x/2019/drafts/g.jpg")
    assert _found(tmp_path, rules=IgnoreRules(["*.png"])) == [
        "2019/drafts/f.jpg", "Screenshots/d.jpg", "a.jpg", "sub/Screenshots/e.jpg", "x/2019/drafts/g.jpg"]
    # A folder pattern without a slash inside matches at any depth; one with a slash is anchored.
    assert _found(tmp_path, rules=IgnoreRules(["Screenshots/", "2019/drafts"])) == ["a.jpg", "b.png", "sub/c.png", "x/2019/drafts/g.jpg"]
    # An absolute path under the indexed folder means that path.
    assert _found(tmp_path, rules=IgnoreRules([f"{tmp_path}/sub"])) == [
        "2019/drafts/f.jpg", "Screenshots/d.jpg", "a.jpg", "b.png", "x/2019/drafts/g.jpg"]


def test_nested_ignore_files_combine_like_gitignore(tmp_path):
    _touch(tmp_path, "a.png", "keep.png", "b.jpg", "trips/c.png", "trips/d.jpg", "trips/raw/e.jpg", "trips/raw/best.jpg",
           "trips/old/f.jpg", "trips/old/g.png", "other/h.png", "other/@eaDir/i.jpg")
    (tmp_path / ".photosearchignore").write_text("# comments and blank lines are fine\n\n*.png\n!keep.png\nold/\n")
    # Deeper files add rules and re-include what shallower ones excluded.
    (tmp_path / "trips" / ".photosearchignore").write_text("!c.png\nraw/*\n!raw/best.jpg\n")
    # The defaults come first: a .photosearchignore may re-include one of them.
    (tmp_path / "other" / ".photosearchignore").write_text("!@eaDir/\n")
    assert _found(tmp_path) == ["b.jpg", "keep.png", "other/@eaDir/i.jpg", "trips/c.png", "trips/d.jpg", "trips/raw/best.jpg"]
    # --exclude has the last word, over every file.
    assert _found(tmp_path, rules=IgnoreRules(["best.jpg", "keep.png"])) == ["b.jpg", "other/@eaDir/i.jpg", "trips/c.png", "trips/d.jpg"]


def test_ignore_files_above_the_indexed_folder_apply(tmp_path):
    _touch(tmp_path, "trips/a.jpg", "trips/b.png", "trips/private/c.jpg")
    (tmp_path / ".photosearchignore").write_text("*.png\ntrips/private/\n")
    assert _found(tmp_path / "trips") == ["a.jpg"]
    items = list(scan([os.fsencode(tmp_path / "trips" / "private")]))
    assert [(os.fsdecode(i.path), i.reason) for i in items] == [(str(tmp_path / "trips" / "private"), "excluded by an ignore rule, not indexed")]


def test_excluded_folder_is_never_listed(tmp_path, monkeypatch):
    root = tmp_path / "pics"
    _touch(root, "a.jpg", "@eaDir/a.jpg/thumb.jpg", "private/b.jpg", "ok/c.jpg")
    (root / ".photosearchignore").write_text("private/\n")
    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: listed.append(os.path.relpath(path, os.fsencode(root))) or real_scandir(path))
    items = list(scan([os.fsencode(root)]))
    assert [os.path.basename(i.path) for i in items] == [b"a.jpg", b"c.jpg"]  # no problems either
    assert listed == [b".", b"ok"]


def test_unreadable_or_bad_ignore_file_is_a_problem_and_its_folder_is_kept(tmp_path):
    _touch(tmp_path, "a.jpg", "bad/b.jpg")
    (tmp_path / "bad" / ".photosearchignore").write_text("*.png\n!\n")
    items = list(scan([os.fsencode(tmp_path)]))
    problems = [(os.fsdecode(i.path), i.reason) for i in items if isinstance(i, ScanProblem)]
    assert problems == [(str(tmp_path / "bad"), ".photosearchignore line 2 is not a valid gitignore pattern: !")]
    assert [os.path.basename(i.path) for i in items if isinstance(i, PhotoFile)] == [b"a.jpg"]


def test_non_utf8_names_can_be_excluded(tmp_path):
    root = os.fsencode(tmp_path)
    for name in (b"caf\xe9.jpg", b"ok.jpg"):
        with open(os.path.join(root, name), "wb") as f:
            f.write(b"x")
    with open(os.path.join(root, b".photosearchignore"), "wb") as f:
        f.write(b"caf\xe9.jpg\n")
    assert _found(tmp_path) == ["ok.jpg"]


def test_index_exclude_with_a_glob_and_a_folder(cli, tiny_model, tmp_path, isolated_home):
    root = tmp_path / "pics"
    make_pictures(root, 2, prefix="keep")
    make_pictures(root, 1, prefix="shot", ext="png")
    make_pictures(root / "Screenshots", 2, prefix="screen", seed=1)
    make_pictures(root / "@eaDir", 1, prefix="synology", seed=2)
    result = cli("index", str(root), "--exclude", "*.png", "--exclude", "Screenshots/", "--model", f"local-dir:{tiny_model}")
    assert result.exit_code == 0, result.stderr
    assert "2 added, 0 updated, 0 removed" in result.stderr
    assert _indexed(isolated_home) == ["keep000.jpg", "keep001.jpg"]


def test_a_rule_added_after_indexing_removes_those_photos_on_the_next_run(cli, tiny_model, tmp_path, isolated_home):
    root = tmp_path / "pics"
    make_pictures(root, 2, prefix="keep")
    make_pictures(root / "drafts", 2, prefix="draft", seed=1)
    make_pictures(root / "trips", 1, prefix="png", ext="png", seed=2)
    result = cli("index", str(root), "--model", f"local-dir:{tiny_model}")
    assert "5 added" in result.stderr

    (root / ".photosearchignore").write_text("drafts/\n")
    result = cli("index", str(root))
    assert result.exit_code == 0, result.stderr
    assert "0 added, 0 updated, 2 removed, 3 unchanged, 0 failed; 2 of the removed excluded by ignore rules." in result.stderr
    found = [json.loads(line)["path"] for line in cli("query", "a photo", "--json", "-k", "50").stdout.splitlines()]
    assert sorted(Path(p).name for p in found) == ["keep000.jpg", "keep001.jpg", "png000.png"]

    (root / "keep001.jpg").unlink()  # vanished, not excluded: removed, not counted as excluded
    (root / "drafts" / "draft000.jpg").unlink()
    result = cli("index", str(root), "--exclude", "*.png")
    assert "0 added, 0 updated, 2 removed, 1 unchanged, 0 failed; 1 of the removed excluded by ignore rules." in result.stderr
    assert _indexed(isolated_home) == ["keep000.jpg"]

    # Taking the rules away brings the photos back.
    (root / ".photosearchignore").unlink()
    result = cli("index", str(root))
    assert "2 added, 0 updated, 0 removed, 1 unchanged, 0 failed." in result.stderr
    assert _indexed(isolated_home) == ["draft001.jpg", "keep000.jpg", "png000.png"]


def test_a_bad_exclude_pattern_is_a_one_line_error(cli, tmp_path, isolated_home):
    make_pictures(tmp_path / "pics", 1)
    result = cli("index", str(tmp_path / "pics"), "--exclude", "photos\\")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: --exclude 'photos\\' is not a valid gitignore pattern. Hint: ")
    assert result.stderr.count("\n") == 1 and "Hint:" in result.stderr
    assert not (isolated_home / "data" / "library.db").exists()
