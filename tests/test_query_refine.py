"""Negations read as minus terms, `--within` (a cut-off relative to the best score) and
`--sort`, in the CLI and through the Library, on held-out pictures the tiny CLIP trained by
our test code never saw."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.support.synthetic import write_folder
from tests.support.train import trained_tiny_model

PER_CLASS = 6  # 96 pictures: 24 circles, 6 of them red
HELDOUT_SEED = 8128
DAY = 86_400


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """A held-out folder indexed once, each picture on a day of its own (capture time is the
    file time: these pictures carry no EXIF), in an order unrelated to names or classes."""
    import numpy as np
    from typer.testing import CliRunner

    from photosearch.cli import app

    root = tmp_path_factory.mktemp("refine")
    folder = root / "pictures"
    labels = write_folder(folder, per_class=PER_CLASS, seed=HELDOUT_SEED)
    days = np.random.default_rng(HELDOUT_SEED).permutation(len(labels))
    for name, day in zip(sorted(labels), days, strict=True):
        when = 1_500_000_000 + int(day) * DAY
        os.utime(folder / name, (when, when))
    db = root / "library.db"
    model = f"local-dir:{trained_tiny_model()}"
    result = CliRunner().invoke(app, ["index", str(folder), "--db", str(db), "--model", model])
    assert result.exit_code == 0, result.stderr
    return {"root": root, "folder": folder, "labels": {str(folder / n): lab for n, lab in labels.items()}, "db": db, "model": model}


@pytest.fixture(scope="module")
def library(lib):
    from photosearch import Library

    with Library.open(lib["db"]) as opened:
        yield opened


def run(cli, lib, *args: str):
    return cli("query", *args, "--json", "--db", str(lib["db"]))


def records(cli, lib, *args: str) -> list[dict]:
    result = run(cli, lib, *args)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def labels_of(lib, found) -> list[str]:
    return [lib["labels"][r["path"] if isinstance(r, dict) else str(r.path)] for r in found]


# -- negation -------------------------------------------------------------------------------


def test_a_circle_without_red_finds_no_red_circles_while_the_literal_query_does(cli, lib):
    result = run(cli, lib, "a circle without red", "-k", "10")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == 'query: "a circle without red" → "a circle" − "red"\n'
    parsed = [json.loads(line) for line in result.stdout.splitlines()]
    found = labels_of(lib, parsed)
    assert "red circle" not in found, found
    assert sum(label.endswith("circle") for label in found) >= 9, found
    assert all(r["query"] == "a circle without red" and r["parsed"] == {"text": "a circle", "sub": ["red"]} for r in parsed)

    literal = run(cli, lib, "a circle without red", "-k", "10", "--literal")
    assert literal.exit_code == 0 and literal.stderr == ""
    as_typed = [json.loads(line) for line in literal.stdout.splitlines()]
    assert "red circle" in labels_of(lib, as_typed), labels_of(lib, as_typed)
    assert all(r["parsed"] is None for r in as_typed)


def test_a_negation_is_exactly_a_sub_term(cli, lib):
    read = records(cli, lib, "a circle without red", "-k", "20")
    by_hand = records(cli, lib, "a circle", "--sub", "red", "-k", "20")
    assert [(r["path"], r["score"]) for r in read] == [(r["path"], r["score"]) for r in by_hand]


def test_the_library_reads_negations_and_says_how(library, lib):
    from photosearch.results import ParsedQuery

    hits = library.search("a circle without red", k=10)
    assert hits.parsed == ParsedQuery("a circle without red", "a circle", ("red",))
    assert "red circle" not in labels_of(lib, hits)
    as_typed = library.search("a circle without red", k=10, literal=True)
    assert as_typed.parsed == ParsedQuery("a circle without red", "a circle without red", literal=True)
    assert "red circle" in labels_of(lib, as_typed)
    assert isinstance(hits, list) and hits[:3] == list(hits)[:3]  # still the list it always was


def test_several_negations_subtract_each_phrase(cli, lib):
    result = run(cli, lib, "a circle without red and no blue", "-k", "8")
    assert result.stderr == 'query: "a circle without red and no blue" → "a circle" − "red" − "blue"\n'
    found = labels_of(lib, [json.loads(line) for line in result.stdout.splitlines()])
    assert not {"red circle", "blue circle"} & set(found), found
    assert sum(label.endswith("circle") for label in found) >= 7, found


def test_nothing_positive_left_means_the_query_is_searched_as_typed_and_said_so(cli, lib):
    result = run(cli, lib, "not red", "-k", "5")
    assert result.exit_code == 0
    assert result.stderr == 'query: "not red" searched as typed: nothing would be left to look for once "red" is taken away\n'
    literal = records(cli, lib, "not red", "-k", "5", "--literal")
    assert [json.loads(line) for line in result.stdout.splitlines()] == literal


def test_quiet_silences_the_reading_and_json_stdout_stays_pure(cli, lib):
    result = cli("query", "a circle without red", "-k", "3", "--db", str(lib["db"]), "-q")
    assert result.exit_code == 0 and result.stderr == ""
    assert all(json.loads(line)["rank"] for line in result.stdout.splitlines())


def test_image_queries_are_never_read_for_negations(cli, lib, tmp_path):
    example = next(p for p, label in sorted(lib["labels"].items()) if label == "green square")
    named = tmp_path / "a circle without red.jpg"
    shutil.copy(example, named)
    result = run(cli, lib, str(named), "-k", "3")
    assert result.exit_code == 0 and result.stderr == ""
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(r["parsed"] is None for r in found)
    assert labels_of(lib, found) == ["green square"] * 3


def test_batch_queries_each_say_how_they_were_read(cli, lib):
    result = cli("query", "-", "-k", "2", "--json", "--db", str(lib["db"]), input="a square without yellow\na red cross\n")
    assert result.exit_code == 0
    assert result.stderr == 'query: "a square without yellow" → "a square" − "yellow"\n'
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["parsed"] for r in lines] == [{"text": "a square", "sub": ["yellow"]}] * 2 + [None] * 2


# -- within -----------------------------------------------------------------------------------


def _cut_between(scores: list[float], keep: int) -> float:
    """A distance from the best that keeps exactly `keep` scores: halfway into the gap after
    the last one kept, so rounding can't decide it."""
    return scores[0] - (scores[keep - 1] + scores[keep]) / 2


def test_within_keeps_exactly_the_results_close_to_the_best(cli, lib):
    every = records(cli, lib, "a yellow triangle", "-k", "30")
    scores = [r["score"] for r in every]
    gaps = [i for i in range(1, 29) if scores[i - 1] - scores[i] > 2e-5]
    assert gaps, scores
    for keep in (gaps[0], gaps[len(gaps) // 2], gaps[-1]):
        d = _cut_between(scores, keep)
        within = records(cli, lib, "a yellow triangle", "-k", "30", "--within", f"{d:.6f}")
        assert [r["path"] for r in within] == [r["path"] for r in every[:keep]], (keep, d)
        assert [r["rank"] for r in within] == list(range(1, keep + 1))
    # The class stands out of the rest: a tight cut-off gives fewer than k, all of it.
    close = records(cli, lib, "a yellow triangle", "-k", "30", "--within", "0.05")
    assert 1 <= len(close) < 30
    assert set(labels_of(lib, close)) == {"yellow triangle"}, labels_of(lib, close)


def test_within_through_the_library(library):
    every = library.search("a blue cross", k=40)
    for d in (0.0, 0.01, 0.1, 0.3, 2.0):
        kept = library.search("a blue cross", k=40, within=d)
        assert [h.id for h in kept] == [h.id for h in every if h.score >= every[0].score - d], d
    assert len(library.search("a blue cross", k=40, within=0.01)) < 40
    with_threshold = library.search("a blue cross", k=40, within=0.3, threshold=every[3].score)
    assert [h.id for h in with_threshold] == [h.id for h in every[:4]]


# -- sort -------------------------------------------------------------------------------------


def test_sort_orders_the_same_best_k(cli, lib):
    best = records(cli, lib, "a green circle", "-k", "12")
    by_date = records(cli, lib, "a green circle", "-k", "12", "--sort", "date")
    by_path = records(cli, lib, "a green circle", "-k", "12", "--sort", "path")
    assert sorted(r["path"] for r in by_date) == sorted(r["path"] for r in best)
    assert sorted(r["path"] for r in by_path) == sorted(r["path"] for r in best)
    dates = [r["taken_at"] for r in by_date]
    assert dates == sorted(dates, reverse=True) and len(set(dates)) == 12  # newest first
    assert by_date != best  # the days were shuffled: score order isn't date order
    assert [r["path"] for r in by_path] == sorted(r["path"] for r in best)
    rank_of = {r["path"]: r["rank"] for r in best}
    assert all(r["rank"] == rank_of[r["path"]] for r in by_date + by_path)  # rank stays the score's


def test_sort_after_within_and_through_the_library(library):
    close = library.search("a red square", k=30, within=0.05)
    by_date = library.search("a red square", k=30, within=0.05, sort="date")
    assert {h.id for h in by_date} == {h.id for h in close}
    assert [h.taken_at for h in by_date] == sorted((h.taken_at for h in close), reverse=True)
    by_path = library.search("a red square", k=30, within=0.05, sort="path")
    assert [h.path for h in by_path] == sorted(h.path for h in close)


def test_photos_without_a_date_sort_last():
    """A library from before capture times were recorded may have photos without one."""
    from photosearch.library import _ordered
    from photosearch.results import Hit

    def hit(rank, taken_at):
        return Hit(rank, Path(f"/p/{rank}.jpg"), 1 - rank / 10, rank, 10, 10, 100, taken_at)

    hits = [hit(1, None), hit(2, "2019-01-01T00:00:00"), hit(3, "2021-06-01T12:00:00"), hit(4, None), hit(5, "2019-01-01T00:00:00")]
    assert [h.rank for h in _ordered(hits, "date")] == [3, 2, 5, 1, 4]


# -- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, error",
    [
        (["--within", "-0.1"], "Error: within -0.1 is not a distance from the best score. Hint: use a number 0 or more, e.g. 0.05.\n"),
        (["--within", "close"], "Error: --within 'close' is not a number. Hint: give a score distance, e.g. --within 0.05.\n"),
        (["--within", "nan"], "Error: within nan is not a distance from the best score. Hint: use a number 0 or more, e.g. 0.05.\n"),
        (["--sort", "size"], "Error: cannot sort by 'size'. Hint: sort by score, date or path.\n"),
    ],
)
def test_bad_within_or_sort_is_a_one_line_error(cli, lib, args, error):
    result = run(cli, lib, "a red circle", *args)
    assert result.exit_code == 2
    assert result.stderr == error and result.stdout == ""


def test_bad_within_or_sort_through_the_library(library):
    from photosearch.errors import UsageError

    for options in ({"within": -1.0}, {"within": float("inf")}, {"within": "0.1"}, {"sort": "Date"}, {"sort": ""}):
        with pytest.raises(UsageError) as raised:
            library.search("a red circle", **options)
        assert "\n" not in raised.value.one_line()
