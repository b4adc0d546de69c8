"""photosearch.Library, as a script would use it: the same results as the CLI, no printing,
photosearch's own errors, and the fast paths kept."""

from __future__ import annotations

import json
import os

import pytest

import photosearch
from photosearch.errors import ModelMismatchError, NotFoundError, UsageError
from tests.support.pictures import make_pictures
from tests.support.probe import probe


@pytest.fixture
def library(tiny_model, tmp_path):
    make_pictures(tmp_path / "pics", 8)
    make_pictures(tmp_path / "pics" / "sub", 4, seed=5, prefix="other")
    lib = photosearch.Library.open(tmp_path / "lib.db", model=f"local-dir:{tiny_model}")
    lib.index([tmp_path / "pics"])
    yield lib
    lib.close()


def test_search_returns_the_same_hits_as_the_cli(library, cli, tmp_path, capfd):
    hits = library.search("a red circle", k=5)
    capfd.readouterr()
    result = cli("query", "a red circle", "-k", "5", "--json", "--db", str(tmp_path / "lib.db"))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(h.rank, str(h.path), round(h.score, 6)) for h in hits] == [(r["rank"], r["path"], r["score"]) for r in records]
    assert all(isinstance(h, photosearch.Hit) and h.id > 0 for h in hits)


def test_the_library_never_prints(tiny_model, tmp_path, capfd):
    make_pictures(tmp_path / "pics", 3)
    (tmp_path / "pics" / "broken.jpg").write_bytes(b"not a jpeg")
    with photosearch.Library.open(tmp_path / "lib.db", model=f"local-dir:{tiny_model}") as lib:
        summary = lib.index(tmp_path / "pics")
        lib.search("a dog")
        list(lib.classify(["a", "b"]))
        lib.duplicates()
    assert (summary.added, summary.failed) == (3, 1)
    assert capfd.readouterr() == ("", "")


def test_a_stored_photo_is_a_query_without_any_model(library):
    target = library.search("a blue square", k=1)[0]
    code = f"import photosearch\nprint(len(photosearch.Library.open({str(library.path)!r}).search({target.id})))\n"
    run = probe(code, ("torch", "onnxruntime"), timeout=120)
    assert run.stdout.split() == ["10"], run.stderr
    assert run.imported == set()
    assert target.id not in [h.id for h in library.search(target)]
    assert library.search(target, include_query_images=True)[0].id == target.id


def test_photo_by_id_and_path_and_not_found(library, tmp_path):
    some = next(iter(library.photos()))
    assert library.photo(some.id) == some == library.photo(str(some.path))
    with pytest.raises(NotFoundError):
        library.photo(999_999)
    with pytest.raises(NotFoundError) as caught:
        library.photo(tmp_path / "nope.jpg")
    assert caught.value.exit_code == 1


def test_filters_narrow_photos_search_and_duplicates(library, tmp_path):
    under_sub = photosearch.Filters(in_dirs=[tmp_path / "pics" / "sub"])
    assert sorted(p.path.name for p in library.photos(under_sub)) == [f"other{i:03d}.jpg" for i in range(4)]
    assert {h.path.parent.name for h in library.search("a circle", k=20, filters=under_sub)} == {"sub"}
    with pytest.raises(UsageError):
        photosearch.Filters(since="last tuesday")


def test_a_different_model_is_refused_at_open(library, other_tiny_model):
    with pytest.raises(ModelMismatchError):
        photosearch.Library.open(library.path, model=f"local-dir:{other_tiny_model}")


def test_bad_arguments_are_usage_errors(library):
    for call in (
        lambda: library.search("x", k=0),
        lambda: library.search("   "),
        lambda: library.search("x", templates=["no placeholder"]),
        lambda: list(library.classify(["only one"])),
        lambda: library.duplicates(threshold=2),
    ):
        with pytest.raises(UsageError):
            call()


def test_the_dimension_check_after_loading_the_model_can_fail(library, tmp_path):
    """A library whose recorded vector size isn't the model's refuses the model instead of
    searching one vector space with another."""
    library._store.set_meta({"dim": 32})  # the tiny model makes 64-d vectors
    make_pictures(tmp_path / "outside", 1, seed=9)
    with photosearch.Library.open(library.path) as lib:
        with pytest.raises(ModelMismatchError, match="64-d vectors; the library holds 32-d"):
            lib.search(str(tmp_path / "outside" / "photo000.jpg"))


def test_classify_honours_folder_arguments_and_in_together(library, cli, tmp_path):
    """Photos under the folder argument that also pass --in: neither replaces the other."""
    args = ["classify", "--labels", "red,blue", "--db", str(library.path), "--json"]
    both = cli(*args, str(tmp_path / "pics"), "--in", str(tmp_path / "pics" / "sub"))
    assert both.exit_code == 0, both.stderr
    names = sorted(os.path.basename(json.loads(line)["path"]) for line in both.stdout.splitlines())
    assert names == [f"other{i:03d}.jpg" for i in range(4)]
    disjoint = cli(*args, str(tmp_path / "pics" / "sub"), "--glob", "photo*")
    assert disjoint.exit_code == 0 and disjoint.stdout == ""
    a_file = cli(*args, str(tmp_path / "pics" / "photo000.jpg"), "--in", str(tmp_path / "pics"))
    assert a_file.exit_code == 2
    assert a_file.stderr.startswith("Error: filters apply to folders and the library, not to photo files")


def test_precision_goes_through_config_and_names_its_source(library, cli, tmp_path, monkeypatch):
    """A bad PHOTOSEARCH_PRECISION is reported as that variable, from config, for queries
    (whose model defaults to fp32) as for index runs."""
    make_pictures(tmp_path / "outside", 1, seed=9)
    monkeypatch.setenv("PHOTOSEARCH_PRECISION", "fp8")
    query = cli("query", str(tmp_path / "outside" / "photo000.jpg"), "--db", str(library.path))
    assert query.exit_code == 2
    assert query.stderr == "Error: PHOTOSEARCH_PRECISION 'fp8' is not a precision. Hint: use auto, fp32, bf16 or fp16.\n"
    index = cli("index", str(tmp_path / "outside"), "--db", str(library.path), "--precision", "fp4")
    assert index.stderr.startswith("Error: --precision 'fp4' is not a precision.")
    from photosearch import config

    monkeypatch.setenv("PHOTOSEARCH_PRECISION", "bf16")
    assert config.requested_precision(default="fp32") == "bf16"
    assert config.requested_precision("fp32") == "fp32"
