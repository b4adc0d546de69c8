"""`--contact-sheet FILE`: the results' thumbnails in a labelled grid, checked in the pixels.

Each test runs the real CLI, decodes the image it wrote and looks at it: every result's
thumbnail is in its grid cell (and matches that cell better than any other result's),
cells past the last result are empty, each label strip carries dark text that reads like
the label re-drawn from the JSON output, and duplicate groups each start a row of their
own below a rule.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import photosearch
from photosearch import sheet
from tests.support.cli import run_cli
from tests.support.pictures import difference, make_pictures, thumbnails
from tests.support.synthetic import write_folder
from tests.support.train import trained_tiny_model


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("sheet")
    make_pictures(root / "pics", 8, seed=11)
    db = root / "lib.db"
    with photosearch.Library.open(db, model=f"local-dir:{tiny_model}") as lib:
        lib.index([root / "pics"])
    return {"db": str(db), "pics": root / "pics", "query": str(root / "pics" / "photo000.jpg")}


def dark_pixels(image: Image.Image) -> int:
    return sum(image.convert("L").point(lambda v: 255 if v < 110 else 0).histogram()[255:])


def is_blank(image: Image.Image, colour, tolerance: int = 3) -> bool:
    low_high = image.getextrema()
    return all(abs(lo - c) <= tolerance and abs(hi - c) <= tolerance for (lo, hi), c in zip(low_high, colour, strict=True))


def check_tiles(picture, cells: list, expected: list, labels: list[tuple[str, str]], rivals: list | None = None) -> None:
    """Each cell shows its own thumbnail and label. Each thumbnail must match its cell better
    than any of `rivals` does (default: the other cells' thumbnails), each label better than
    the other labels re-drawn."""
    for i, (cell, thumb) in enumerate(zip(cells, expected, strict=True)):
        crop = picture.crop(sheet.picture_box(cell, thumb.size))
        own = difference(crop, thumb)
        assert own < 6, f"tile {i} is not its photo's thumbnail (difference {own:.1f})"
        others = [t for j, t in enumerate(expected) if j != i] if rivals is None else rivals
        assert all(difference(crop, other) > own for other in others)
    drawn = [sheet.label_image(lines) for lines in labels]
    for i, cell in enumerate(cells):
        strip = picture.crop(cell.label)
        assert dark_pixels(strip) > 150, f"label {i} has no text"
        own = difference(strip, drawn[i])
        assert own < 3, f"label {i} doesn't read {labels[i]}"
        assert all(difference(strip, other) > own for j, other in enumerate(drawn) if labels[j] != labels[i])


def test_query_sheet_has_every_result_in_its_cell_with_its_label(library, tmp_path):
    target = tmp_path / "found.jpg"
    done = run_cli("query", library["query"], "-k", "7", "--json", "--db", library["db"], "--contact-sheet", str(target))
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]  # the usual output, still
    assert len(results) == 7
    assert done.stderr.decode() == f"Wrote the contact sheet {target} (7 photos).\n"

    picture = Image.open(target)
    assert picture.format == "JPEG"
    picture = picture.convert("RGB")
    plan = sheet.layout([len(results)])
    assert picture.size == plan.size
    # The grid: 5 tiles across, two rows, as many pictures as results.
    assert plan.columns == 5 and len({cell.picture[1] for cell in plan.cells[0]}) == 2
    below_title = picture.crop((0, plan.headers[0][3], picture.width, picture.height))
    assert _runs(_non_blank_columns(below_title)) == plan.columns

    labels = [(f"#{r['rank']}  {r['score']:.3f}  {r['taken_at'][:10]}", Path(r["path"]).name) for r in results]
    check_tiles(picture, plan.cells[0], thumbnails(library["db"], [r["path"] for r in results]), labels)
    # The rest of the last row is empty: nothing drawn past the 7th result.
    last = plan.cells[0][-1]
    rest = picture.crop((last.picture[2] + sheet.GAP // 2, last.picture[1], picture.width - sheet.MARGIN, last.label[3]))
    assert is_blank(rest, sheet.BACKGROUND, tolerance=8)  # JPEG: a little ringing near the last tile
    # The title says what was asked.
    assert dark_pixels(picture.crop(plan.headers[0])) > 100


def _non_blank_columns(image: Image.Image) -> list[bool]:
    """Per pixel column: is something drawn there (20 pixels or more off white, so JPEG
    ringing in the white gaps between tiles doesn't count)?"""
    grey = np.asarray(image.convert("L"))
    return list((grey < 247).sum(axis=0) >= 20)


def _runs(flags: list[bool]) -> int:
    return sum(1 for i, on in enumerate(flags) if on and (i == 0 or not flags[i - 1]))


def test_duplicate_groups_start_rows_of_their_own(tmp_path):
    folder = tmp_path / "dups"
    names = sorted(write_folder(folder, per_class=1, seed=77))
    for name in names[:3]:  # recompressed copies: three pairs of near-duplicates
        Image.open(folder / name).convert("RGB").save(folder / f"copy_{name}", quality=90)
    shutil.copy(folder / names[0], folder / f"again_{names[0]}")  # a third of the first
    db = str(tmp_path / "lib.db")
    with photosearch.Library.open(db, model=f"local-dir:{trained_tiny_model()}") as lib:
        lib.index([folder])
    target = tmp_path / "dups.png"
    done = run_cli("duplicates", "--threshold", "0.9995", "--json", "--db", db, "--contact-sheet", str(target))
    assert done.returncode == 0, done.stderr
    groups = [json.loads(line) for line in done.stdout.splitlines()]
    assert [g["size"] for g in groups] == [3, 2, 2]

    picture = Image.open(target).convert("RGB")
    plan = sheet.layout([g["size"] for g in groups])
    assert picture.size == plan.size
    pictures = [thumbnails(db, [p["path"] for p in group["photos"]]) for group in groups]
    for number, (group, cells) in enumerate(zip(groups, plan.cells, strict=True)):
        labels = [(f"group {group['group']}  similarity {p['similarity']:.3f}", Path(p["path"]).name) for p in group["photos"]]
        # Members of a group look alike by design: only other groups' photos are rivals.
        rivals = [t for other, thumbs in enumerate(pictures) if other != number for t in thumbs]
        check_tiles(picture, cells, pictures[number], labels, rivals)
        assert len({cell.picture[1] for cell in cells}) == 1  # one row a group
        if number:  # below the previous group, a rule across the sheet between them
            above = plan.cells[number - 1][-1].label[3]
            assert cells[0].picture[1] > above
            rule = plan.rules[number - 1]
            assert above < rule < cells[0].picture[1]
            line = picture.crop((sheet.MARGIN, rule, picture.width - sheet.MARGIN, rule + 1))
            assert is_blank(line, sheet.RULE)
        # Nothing drawn right of a group's last tile.
        last = cells[-1]
        assert is_blank(picture.crop((last.picture[2] + 1, last.picture[1], picture.width, last.label[3])), sheet.BACKGROUND)


def test_a_photo_without_a_thumbnail_gets_a_placeholder_with_the_reason(tiny_model, tmp_path):
    make_pictures(tmp_path / "pics", 4, seed=12)
    db = str(tmp_path / "lib.db")
    with photosearch.Library.open(db, model=f"local-dir:{tiny_model}") as lib:
        lib.index([tmp_path / "pics"])
    args = ["query", str(tmp_path / "pics" / "photo000.jpg"), "-k", "3", "--json", "--db", db]
    results = [json.loads(line) for line in run_cli(*args).stdout.splitlines()]
    gone, edited = Path(results[0]["path"]), Path(results[2]["path"])
    gone.unlink()
    with open(edited, "ab") as f:  # changed since it was indexed: never shown stale
        f.write(b"\0")
    target = tmp_path / "sheet.png"
    done = run_cli(*args, "--contact-sheet", str(target))
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.decode().splitlines() if line.startswith("warning: no thumbnail")]
    assert sorted(warnings) == sorted(f"warning: no thumbnail for {p}: {_reason(p, how)}" for p, how in ((gone, "gone"), (edited, "changed")))

    picture = Image.open(target).convert("RGB")
    cells = sheet.layout([3]).cells[0]
    for i in (0, 2):  # placeholders: the grey box with dark text in it
        box = picture.crop(cells[i].picture)
        colours = box.getcolors(box.width * box.height)
        assert max(colours)[1] == sheet.PLACEHOLDER
        assert dark_pixels(box) > 200
    [fine] = thumbnails(db, [results[1]["path"]])
    assert difference(picture.crop(sheet.picture_box(cells[1], fine.size)), fine) < 3
    assert dark_pixels(picture.crop(cells[0].label)) > 150  # still labelled


def _reason(path: Path, how: str) -> str:
    with photosearch.Library.open(path.parent.parent / "lib.db") as lib:
        photo = lib.photo(path)
        try:
            lib.thumbnail(photo)
        except photosearch.PhotosearchError as error:
            assert how in error.message
            return error.one_line()
    raise AssertionError(f"{path} still has a thumbnail")


@pytest.mark.parametrize(
    "name, problem",
    [
        ("sheet.gif", "can't write a contact sheet as .gif"),
        ("sheet", "can't tell a contact sheet's format without a suffix"),
        ("missing/sheet.jpg", "no folder"),
        ("a-file.txt/sheet.jpg", "no folder"),
        ("a-folder.jpg", "is a folder"),
    ],
)
@pytest.mark.parametrize("command", ["query", "duplicates"])
def test_a_bad_sheet_file_is_refused_before_the_search(cli, library, tmp_path, name, problem, command):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a-file.txt").write_text("x")
    (out / "a-folder.jpg").mkdir()
    args = ["query", library["query"]] if command == "query" else ["duplicates"]
    result = cli(*args, "--json", "--db", library["db"], "--contact-sheet", str(out / name))
    assert result.exit_code == 2
    assert result.stdout == ""  # refused before anything was searched or written
    assert result.stderr.startswith("Error: ") and problem in result.stderr and " Hint: " in result.stderr
    assert result.stderr.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == ["a-file.txt", "a-folder.jpg"]
