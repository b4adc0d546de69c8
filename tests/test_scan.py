"""Walking folders: which files count as photos, hidden files, symlinks, unreadable folders."""

from __future__ import annotations

import os

from photosearch.scan import PhotoFile, ScanProblem, scan


def _names(items):
    return sorted(os.path.basename(i.path).decode() for i in items if isinstance(i, PhotoFile))


def test_scan_finds_photos_by_extension_in_any_case(tmp_path):
    for name in ("a.jpg", "b.JPEG", "c.png", "d.WebP", "e.bmp", "f.gif", "g.tif", "h.TIFF", "notes.txt", "raw.cr2"):
        (tmp_path / name).write_bytes(b"x")
    assert _names(scan([os.fsencode(tmp_path)])) == ["a.jpg", "b.JPEG", "c.png", "d.WebP", "e.bmp", "f.gif", "g.tif", "h.TIFF", "raw.cr2"]  # camera RAW too


def test_symlinks_are_skipped_unless_asked_and_loops_end(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.jpg").write_bytes(b"x")
    (tmp_path / "real" / "loop").symlink_to(tmp_path)
    (tmp_path / "link.jpg").symlink_to(tmp_path / "real" / "a.jpg")
    assert _names(scan([os.fsencode(tmp_path)])) == ["a.jpg"]
    followed = list(scan([os.fsencode(tmp_path)], follow_symlinks=True))
    assert _names(followed) == ["a.jpg", "link.jpg"]
    assert any(isinstance(i, ScanProblem) and "symlink loop" in i.reason for i in followed)


def test_non_utf8_names_are_kept_exactly(tmp_path):
    name = b"caf\xe9.jpg"  # Latin-1, not valid UTF-8
    with open(os.path.join(os.fsencode(tmp_path), name), "wb") as f:
        f.write(b"x")
    found = [i for i in scan([os.fsencode(tmp_path)]) if isinstance(i, PhotoFile)]
    assert [os.path.basename(f.path) for f in found] == [name]
