"""`photosearch query`: ranking mechanics, output modes, exit codes."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import run_cli
from tests.support.pictures import make_pictures
from tests.support.probe import cli_code, probe
from tests.support.train import trained_tiny_model


@pytest.fixture
def indexed(cli, tiny_model, tmp_path, isolated_home):
    photos = make_pictures(tmp_path / "pics", 12)
    result = cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tiny_model}")
    assert result.exit_code == 0, result.stderr
    return photos


def stored_vectors(home: Path) -> dict[str, np.ndarray]:
    """Each photo's vectors as a search scores them, read straight from SQLite: (tiles, dim)
    for a photo with tiles (`--crops max`, the default, and a frame that isn't square), else
    (1, dim); a photo scores its best row."""
    conn = sqlite3.connect(home / "data" / "library.db")
    out = {}
    for path, embedding, tiles in conn.execute("SELECT path, embedding, tiles FROM photos"):
        out[os.fsdecode(path)] = np.frombuffer(tiles if tiles is not None else embedding, dtype="<f4").reshape(-1, len(embedding) // 4)
    conn.close()
    return out


def score(vectors: np.ndarray, query: np.ndarray) -> float:
    return float((vectors @ query).max())


@pytest.fixture
def indexed_apart(cli, tmp_path, isolated_home):
    """The pictures through the trained tiny model, whose vectors for different pictures
    stay apart (cosine <= ~0.97). The random one's all lie within ~1e-7 of each other, so
    which of two ranks first is float rounding, and it changes with the CPU's kernels."""
    photos = make_pictures(tmp_path / "pics", 12)
    result = cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{trained_tiny_model()}")
    assert result.exit_code == 0, result.stderr
    return photos


def test_each_of_a_photos_vectors_ranks_it_first_once(indexed_apart, isolated_home):
    """In the photos' index by its own vector, in the index of tiles by each of its tiles:
    itself first, at cosine 1, listed once."""
    from photosearch import vectors
    from photosearch.query import search
    from photosearch.store import Store

    store = Store.open(isolated_home / "data" / "library.db")
    photos = stored_vectors(isolated_home)
    assert sum(len(v) for v in photos.values()) > len(photos)  # some photos have tiles
    conn = sqlite3.connect(isolated_home / "data" / "library.db")
    own = {os.fsdecode(p): np.frombuffer(e, dtype="<f4") for p, e in conn.execute("SELECT path, embedding FROM photos")}
    conn.close()
    for kind, queries in ((vectors.PHOTOS, {p: v[None] for p, v in own.items()}), (vectors.TILES, photos)):
        index = vectors.load(store, kind=kind).index
        for path, rows in queries.items():
            for vector in rows:
                results = search(store, index, vector, top=3, tiles=kind == vectors.TILES)
                assert results[0].photo.path.decode() == path
                assert results[0].score == pytest.approx(1.0, abs=1e-5)
                assert results[0].score > results[1].score
                assert len({r.photo.id for r in results}) == 3


def test_text_query_ranks_by_cosine_with_the_ensembled_text_vector(cli, indexed, tiny_model, isolated_home):
    """The CLI's ranking equals an independent computation: mean of template vectors, cosine."""
    from photosearch.config import ModelSpec
    from photosearch.model.encode import Encoder
    from photosearch.query import DEFAULT_TEMPLATES

    encoder = Encoder.load(ModelSpec(f"local-dir:{tiny_model}", None), "cpu", "fp32")  # as the exported text tower
    texts = [t.replace("{}", "a blue square") for t in DEFAULT_TEMPLATES]
    q = encoder.encode_texts(texts).mean(axis=0)
    q /= np.linalg.norm(q)
    expected = sorted(((score(v, q), p) for p, v in stored_vectors(isolated_home).items()), reverse=True)[:5]

    result = cli("query", "a blue square", "-k", "5", "--json")
    assert result.exit_code == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert [g["path"] for g in got] == [p for _, p in expected]
    assert [g["score"] for g in got] == pytest.approx([s for s, _ in expected], abs=1e-5)
    assert [g["rank"] for g in got] == [1, 2, 3, 4, 5]

    single = cli("query", "a blue square", "-k", "5", "--no-ensemble", "--json")
    q1 = encoder.encode_texts(["a blue square"])[0]
    top1 = max(stored_vectors(isolated_home).items(), key=lambda kv: score(kv[1], q1))[0]
    assert json.loads(single.stdout.splitlines()[0])["path"] == top1
    assert json.loads(single.stdout.splitlines()[0])["score"] == pytest.approx(score(stored_vectors(isolated_home)[top1], q1), abs=1e-5)


def test_custom_templates_replace_the_default_ensemble(cli, indexed, tiny_model, isolated_home):
    """--template phrasings are what the query vector is made of: the scores are cosines
    with the normalised mean of exactly those phrasings' vectors, not the defaults'."""
    from photosearch.config import ModelSpec
    from photosearch.model.encode import Encoder

    encoder = Encoder.load(ModelSpec(f"local-dir:{tiny_model}", None), "cpu", "fp32")
    photos = stored_vectors(isolated_home)

    def expected_scores(phrasings):
        q = encoder.encode_texts(phrasings).mean(axis=0)
        q /= np.linalg.norm(q)
        return sorted(((score(v, q), p) for p, v in photos.items()), reverse=True)[:4]

    templates = ["a painting of {}.", "{} in the snow"]
    custom = cli("query", "a cat", "-k", "4", "--json", *[a for t in templates for a in ("--template", t)])
    got = [(json.loads(line)["score"], json.loads(line)["path"]) for line in custom.stdout.splitlines()]
    want = expected_scores([t.replace("{}", "a cat") for t in templates])
    assert [p for _, p in got] == [p for _, p in want]
    assert [s for s, _ in got] == pytest.approx([s for s, _ in want], abs=1e-5)
    from photosearch.query import DEFAULT_TEMPLATES

    default_scores = [s for s, _ in expected_scores([t.replace("{}", "a cat") for t in DEFAULT_TEMPLATES])]
    assert [s for s, _ in got] != pytest.approx(default_scores, abs=1e-5)  # the defaults were replaced
    bad = cli("query", "a cat", "--template", "no placeholder")
    assert bad.exit_code == 2
    assert bad.stderr == "Error: template 'no placeholder' has no {} for the query. Hint: write it like \"a photo of {}.\".\n"


def test_json_lines_carry_the_documented_fields(cli, indexed):
    result = cli("query", "red", "-k", "3")  # stdout is not a terminal: JSON Lines by default
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 3
    for record in lines:
        assert list(record) == ["schema", "query", "parsed", "rank", "score", "path", "width", "height", "size_bytes", "taken_at"]
        assert record["schema"] == 1
        assert record["query"] == "red" and record["parsed"] is None
        assert Path(record["path"]).is_file()
        assert record["size_bytes"] == Path(record["path"]).stat().st_size
        assert record["width"] >= 120 and record["height"] >= 120
        assert record["taken_at"][:4].isdigit()
    assert [r["score"] for r in lines] == sorted((r["score"] for r in lines), reverse=True)


def test_paths_and_print0_modes_print_exact_paths(cli, indexed):
    records = [json.loads(line) for line in cli("query", "green", "-k", "4", "--json").stdout.splitlines()]
    expected = [r["path"] for r in records]
    assert cli("query", "green", "-k", "4", "--paths").stdout == "".join(p + "\n" for p in expected)
    assert cli("query", "green", "-k", "4", "-0").stdout_bytes == b"".join(p.encode() + b"\0" for p in expected)


def test_top_and_threshold_limit_results(cli, indexed):
    records = [json.loads(line) for line in cli("query", "sky", "-k", "12").stdout.splitlines()]
    assert len(records) == 12
    cut = (records[4]["score"] + records[5]["score"]) / 2  # printed scores are rounded
    above = [json.loads(line) for line in cli("query", "sky", "-k", "12", "--threshold", str(cut)).stdout.splitlines()]
    assert [r["path"] for r in above] == [r["path"] for r in records[:5]]
    # More asked for than there are photos: all of them, no error.
    assert len(cli("query", "sky", "-k", "50").stdout.splitlines()) == 12


def test_no_results_is_exit_0_and_empty_output(cli, indexed):
    for mode in ("--json", "--paths", "-0"):
        result = cli("query", "anything", "--threshold", "1.01", mode)
        assert result.exit_code == 0
        assert result.stdout == ""


def test_table_output_for_people(cli, indexed):
    """The table shows what the JSON says: each result's rank, score (3 decimals), path and
    size, best first, under the query as its title."""
    records = [json.loads(line) for line in cli("query", "a tree", "-k", "2", "--json").stdout.splitlines()]
    result = cli("query", "a tree", "-k", "2", "--table")
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].strip() == "a tree"
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    rows = [c for c in cells if c[0]]  # a folded path continues on lines with an empty rank
    assert [r[0] for r in rows] == ["1", "2"]
    assert [r[1] for r in rows] == [f"{r['score']:.3f}" for r in records]
    assert [r[3] for r in rows] == [f"{r['width']}×{r['height']}" for r in records]
    # The path column, folded over lines, joined back: exactly the result's path.
    paths, current = [], ""
    for c in cells:
        if c[0] and current:
            paths.append(current)
            current = ""
        current += c[2]
    paths.append(current)
    assert paths == [r["path"] for r in records]


def test_conflicting_output_flags_are_a_usage_error(cli, indexed):
    result = cli("query", "x", "--json", "--paths")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: --json and --paths exclude each other.")


def test_querying_without_a_library_says_how_to_make_one(cli, isolated_home):
    result = cli("query", "a dog")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"Error: no photo library at {isolated_home / 'data' / 'library.db'}. Hint: run `photosearch index FOLDER` "
        "first, or point --db / PHOTOSEARCH_DB at a library.\n"
    )


@pytest.mark.parametrize("name", ["library.db.tiles.faiss", "library.db.faiss"])
def test_missing_or_corrupt_index_file_is_rebuilt_not_empty(cli, indexed, isolated_home, name):
    """Words search the index of tiles (--crops max, the default); a photo, the photos'."""
    query = "yellow" if "tiles" in name else str(indexed[0])
    expected = cli("query", query, "-k", "5").stdout
    assert len(expected.splitlines()) == 5
    faiss_file = isolated_home / "data" / name
    faiss_file.unlink()
    result = cli("query", query, "-k", "5")
    assert result.stdout == expected
    assert "warning: the search index is missing; rebuilt it from the library." in result.stderr
    assert faiss_file.exists()

    data = bytearray(faiss_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    faiss_file.write_bytes(bytes(data))
    result = cli("query", query, "-k", "5")
    assert result.stdout == expected
    assert "corrupt" in result.stderr

    faiss_file.write_bytes(bytes(data[:100]))
    assert cli("query", query, "-k", "5").stdout == expected


def test_broken_pipe_exits_quietly(indexed, isolated_home):
    """`photosearch query x | head -1`: the reader leaves early; no traceback, no error."""
    import subprocess
    import sys

    proc = subprocess.run(
        f"{sys.executable} -m photosearch query 'a red thing' -k 12 --json | head -c 10",
        shell=True,
        capture_output=True,
        env=dict(os.environ),
        timeout=300,
    )
    assert proc.returncode == 0
    assert len(proc.stdout) == 10
    assert proc.stderr == b""


def test_subprocess_output_is_valid_json_lines(indexed):
    proc = run_cli("query", "a photo", "-k", "3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    records = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [r["rank"] for r in records] == [1, 2, 3]


def test_non_utf8_file_names_round_trip(cli, tiny_model, tmp_path):
    import base64

    folder = os.fsencode(tmp_path / "pics")
    os.makedirs(folder)
    source = make_pictures(tmp_path / "src", 1)[0]
    raw = os.path.join(folder, b"caf\xe9.jpg")
    with open(raw, "wb") as f:
        f.write(source.read_bytes())
    assert cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tiny_model}").exit_code == 0
    record = json.loads(cli("query", "x", "--json").stdout)
    assert base64.b64decode(record["path_bytes"]) == raw
    assert record["path"] == raw.decode("utf-8", "replace")
    assert cli("query", "x", "-0").stdout_bytes == raw + b"\0"


def test_a_repeated_text_query_loads_no_model(indexed, isolated_home):
    """No text query imports torch, even with an empty cache folder: the numpy text tower's
    recipe is written from the weights alone. The query's vector is cached in the library,
    so the second time the text tower isn't even prepared."""
    query = ("query", "a green thing", "-k", "3", "--json")

    def run(args, cache: str):  # each run with its own empty cache folder
        done = probe(cli_code(*args), ("torch",), env={"PHOTOSEARCH_CACHE": str(isolated_home / cache)})
        return done, list((isolated_home / cache / "text-towers").glob("*/tower.json"))

    (first, prepared), (second, again) = run(query, "cache-a"), run(query, "cache-b")
    assert first.imported == second.imported == set()
    assert len(prepared) == 1 and again == []  # the second answered from the library's cache
    assert first.stdout == second.stdout and len(second.stdout.splitlines()) == 3
    # Another phrasing set is another query: not answered from the cache.
    other, prepared = run((*query, "--no-ensemble"), "cache-c")
    assert other.imported == set() and len(prepared) == 1


def test_classify_over_the_library_loads_no_torch(indexed, isolated_home):
    """Label vectors come from the exported text tower, then from the library's cache; the
    logit scale from the library. Tagging indexed photos never needs torch."""
    def run(cache):
        args = ("classify", "--labels", "a red thing,a green thing,a blue thing", "-k", "2", "--json")
        return probe(cli_code(*args), ("torch",), env={"PHOTOSEARCH_CACHE": str(cache)})

    with_tower = run(isolated_home / "data" / "cache")  # where `index` exported the text tower
    from_cache = run(isolated_home / "empty-cache")  # no tower: the labels' vectors are in the library
    for done in (with_tower, from_cache):
        assert done.imported == set(), done.stderr
    records = [json.loads(line) for line in with_tower.stdout.splitlines()]
    assert sorted(r["path"] for r in records) == sorted(str(p) for p in indexed)
    assert all(len(r["labels"]) == 2 for r in records)
    assert from_cache.stdout == with_tower.stdout
