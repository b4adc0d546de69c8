"""Image queries, +/- terms, filters, batch queries, zero-shot tagging and near-duplicates,
checked for meaning with the tiny CLIP trained by our test code."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.support.synthetic import CLASSES, class_name, write_folder
from tests.support.train import trained_tiny_model

PER_CLASS = 4
EXIF_DATE = "2019:07:14 10:00:00"


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """Two held-out folders (a/ and b/) indexed into one library, with a few photos given
    EXIF capture dates, a few made larger, and old mtimes on the rest."""
    from typer.testing import CliRunner

    from photosearch.cli import app

    root = tmp_path_factory.mktemp("features")
    model = root / "model"
    shutil.copytree(trained_tiny_model(), model)
    labels: dict[str, str] = {}
    for part, seed in (("a", 501), ("b", 502)):
        for name, label in write_folder(root / part, per_class=PER_CLASS, seed=seed).items():
            labels[str(root / part / name)] = label
    paths = sorted(labels)
    dated = paths[:3]
    for p in dated:  # re-save with a capture date in EXIF
        img = Image.open(p)
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = EXIF_DATE
        img.save(p, quality=95, exif=exif)
    large = paths[3:5]
    for p in large:
        Image.open(p).resize((400, 400)).save(p, quality=95)
    old = dt.datetime(2015, 3, 1).timestamp()
    for p in paths[3:]:
        os.utime(p, (old, old))
    db = root / "library.db"
    result = CliRunner().invoke(app, ["index", str(root / "a"), str(root / "b"), "--db", str(db), "--model", f"local-dir:{model}"])
    assert result.exit_code == 0, result.stderr
    return {"root": root, "labels": labels, "db": db, "model": model, "dated": dated, "large": large}


def q(cli, lib, *args: str, input: str | None = None) -> list[dict]:
    result = cli("query", *args, "--json", "--db", str(lib["db"]), input=input)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def label_of(lib, record) -> str:
    return lib["labels"][record["path"]]


# -- image queries ------------------------------------------------------------------------


def test_image_query_finds_the_same_class_and_leaves_itself_out(cli, lib):
    for colour, shape in CLASSES[::5]:
        wanted = class_name(colour, shape)
        example = next(p for p, lab in sorted(lib["labels"].items()) if lab == wanted)
        results = q(cli, lib, example, "-k", "5")
        assert example not in [r["path"] for r in results]
        assert all(r["query"] == example for r in results)
        found = [label_of(lib, r) for r in results]
        assert found.count(wanted) >= 4, (wanted, found)  # 7 others of its class exist
        with_self = q(cli, lib, example, "-k", "1", "--include-query-images")
        assert with_self[0]["path"] == example
        assert with_self[0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_indexed_image_query_needs_no_model(cli, lib, tmp_path):
    """The stored vector is reused: with the weights gone, image queries still work."""
    hidden = tmp_path / "moved-away"
    example = sorted(lib["labels"])[10]
    shutil.move(lib["model"], hidden)
    try:
        results = q(cli, lib, example, "-k", "3")
        assert [label_of(lib, r) for r in results] == [lib["labels"][example]] * 3
        text = cli("query", "a red circle", "--db", str(lib["db"]))
        assert text.exit_code == 5  # a text query does need the model
    finally:
        shutil.move(hidden, lib["model"])


def test_image_outside_the_library_is_encoded(cli, lib, tmp_path):
    new = write_folder(tmp_path / "new", per_class=1, seed=777)
    for name, wanted in list(new.items())[:4]:
        results = q(cli, lib, str(tmp_path / "new" / name), "-k", "4")
        assert [label_of(lib, r) for r in results].count(wanted) >= 3, wanted


def test_text_flag_forces_words(cli, lib, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("red circle").write_bytes(b"not a picture")
    assert cli("query", "red circle", "--db", str(lib["db"])).exit_code == 2  # a file, but no image
    results = q(cli, lib, "red circle", "--text", "-k", "4")
    assert [label_of(lib, r) for r in results] == ["red circle"] * 4


# -- combined queries ---------------------------------------------------------------------


def test_circle_minus_red_returns_circles_that_are_not_red(cli, lib):
    results = q(cli, lib, "circle", "--sub", "red", "-k", "8")
    found = [label_of(lib, r) for r in results]
    assert not any(lab == "red circle" for lab in found), found
    assert sum(lab.endswith("circle") for lab in found) >= 7, found


def test_added_terms_and_weights_steer_the_query(cli, lib):
    results = q(cli, lib, "square", "--add", "2:yellow", "-k", "8")
    assert [label_of(lib, r) for r in results].count("yellow square") == 8
    images = [p for p, lab in sorted(lib["labels"].items()) if lab == "green triangle"][:2]
    mixed = q(cli, lib, images[0], "--add", images[1], "-k", "5")
    assert {images[0], images[1]}.isdisjoint(r["path"] for r in mixed)
    assert [label_of(lib, r) for r in mixed].count("green triangle") >= 5


def test_terms_that_cancel_out_are_an_error(cli, lib):
    result = cli("query", "red", "--sub", "red", "--db", str(lib["db"]))
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: the query terms cancel each other out.")


# -- filters ------------------------------------------------------------------------------


def test_in_folder_takes_top_k_after_filtering(cli, lib):
    a = lib["root"] / "a"
    results = q(cli, lib, "a red circle", "-k", str(PER_CLASS), "--in", str(a))
    assert all(r["path"].startswith(str(a) + "/") for r in results)
    assert [label_of(lib, r) for r in results] == ["red circle"] * PER_CLASS


def test_glob_matches_file_names_or_whole_paths(cli, lib):
    results = q(cli, lib, "anything", "-k", "100", "--glob", "img_0000?.jpg")
    assert len(results) == 20 and all(Path(r["path"]).name.startswith("img_0000") for r in results)
    under_b = q(cli, lib, "anything", "-k", "100", "--glob", "*/b/img_0001?.jpg")
    assert len(under_b) == 10 and all("/b/" in r["path"] for r in under_b)


def test_capture_time_filters_use_exif_then_mtime(cli, lib):
    in_2019 = q(cli, lib, "anything", "-k", "100", "--since", "2019", "--until", "2019")
    assert sorted(r["path"] for r in in_2019) == sorted(lib["dated"])
    assert {r["taken_at"] for r in in_2019} == {"2019-07-14T10:00:00"}
    day = q(cli, lib, "anything", "-k", "100", "--since", "2019-07-14T10:00:00", "--until", "2019-07-14")
    assert len(day) == 3
    old = q(cli, lib, "anything", "-k", "200", "--until", "2016-12")
    assert len(old) == len(lib["labels"]) - 3
    assert all(r["taken_at"].startswith("2015-03-01") for r in old)
    assert q(cli, lib, "anything", "--since", "2030") == []


def test_size_filters(cli, lib):
    big = q(cli, lib, "anything", "-k", "100", "--min-width", "300", "--min-height", "300")
    assert sorted(r["path"] for r in big) == sorted(lib["large"])
    assert {(r["width"], r["height"]) for r in big} == {(400, 400)}


# -- batch queries ------------------------------------------------------------------------


def test_batch_queries_from_stdin_load_the_model_once(cli, lib, monkeypatch):
    """Words need only the text tower (numpy, no torch): loaded once for the whole batch."""
    from photosearch import model
    from photosearch.model import encode

    loads, encoders = [], []
    original, original_init = model.load_text_tower, encode.Encoder.__init__

    def counting(*args, **kwargs):
        tower = original(*args, **kwargs)
        if tower is not None:  # None: not prepared yet (it is then, from the weights alone)
            loads.append(tower)
        return tower

    def counting_encoders(self, *args, **kwargs):
        encoders.append(1)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(model, "load_text_tower", counting)
    monkeypatch.setattr(encode.Encoder, "__init__", counting_encoders)
    records = q(cli, lib, "-", "-k", "3", input="a red circle\n\na blue square\na yellow cross\n")
    assert (len(loads), len(encoders)) == (1, 0)
    assert [r["query"] for r in records] == ["a red circle"] * 3 + ["a blue square"] * 3 + ["a yellow cross"] * 3
    for r in records:
        assert label_of(lib, r) == r["query"][2:]
    assert [r["rank"] for r in records] == [1, 2, 3] * 3


# -- classify -----------------------------------------------------------------------------


def test_classify_tags_the_library_with_probabilities(cli, lib, tmp_path):
    names = [class_name(c, s) for c, s in CLASSES]
    result = cli("classify", "--labels", ",".join(names[:8]), "--labels", ",".join(names[8:]), "-k", "3", "--db", str(lib["db"]))
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == len(lib["labels"])
    correct = sum(r["label"] == lib["labels"][r["path"]] for r in records)
    assert correct / len(records) >= 0.9
    for r in records:
        assert list(r) == ["schema", "path", "label", "probability", "labels"]
        assert len(r["labels"]) == 3 and r["labels"][0]["label"] == r["label"]
        probs = [x["probability"] for x in r["labels"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-5

    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# colours only\nred\ngreen\nblue\nyellow\n")
    new = write_folder(tmp_path / "new", per_class=1, seed=4711)
    files = [str(tmp_path / "new" / n) for n in sorted(new)]
    result = cli("classify", "--labels-file", str(labels_file), *files, "--db", str(lib["db"]))
    colours = [json.loads(line)["label"] for line in result.stdout.splitlines()]
    expected = [new[n].split()[0] for n in sorted(new)]
    assert sum(a == b for a, b in zip(colours, expected, strict=True)) >= 14


def test_classify_needs_two_labels(cli, lib):
    result = cli("classify", "--labels", "cat", "--db", str(lib["db"]))
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: classification needs at least two labels.")


# -- duplicates ---------------------------------------------------------------------------


def test_near_duplicates_are_grouped(cli, tmp_path):
    folder = tmp_path / "dups"
    labels = write_folder(folder, per_class=2, seed=99)
    originals = sorted(labels)[:3]
    for name in originals:  # recompressed copies
        Image.open(folder / name).convert("RGB").save(folder / f"copy_{name}", quality=90)
    db = tmp_path / "lib.db"
    assert cli("index", str(folder), "--db", str(db), "--model", f"local-dir:{trained_tiny_model()}").exit_code == 0
    result = cli("duplicates", "--threshold", "0.9995", "--db", str(db))
    assert result.exit_code == 0, result.stderr
    groups = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(sorted(Path(p["path"]).name for p in g["photos"]) for g in groups) == sorted(
        [f"copy_{n}", n] for n in originals
    )
    assert all(g["size"] == 2 and g["photos"][1]["similarity"] >= 0.9995 for g in groups)
    assert [g["group"] for g in groups] == [1, 2, 3]
    # A loose threshold groups whole classes: more and bigger groups.
    loose = [json.loads(line) for line in cli("duplicates", "--threshold", "0.9", "--db", str(db)).stdout.splitlines()]
    assert max(g["size"] for g in loose) > 2


def test_term_weights_parse():
    from photosearch.query import parse_term

    assert parse_term("2:red").weight == 2.0 and parse_term("2:red").text == "red"
    assert parse_term("0.5:a dog", sign=-1).weight == -0.5
    assert parse_term("time: 10:30").text == "time: 10:30"
