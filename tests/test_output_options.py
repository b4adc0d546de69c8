"""One set of output options for every command that lists photos, documented, and every
JSON line built in one place (schema, path_bytes), in the way sqlite-utils checks its CLI."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import subprocess
import sys

import pytest
import typer

from photosearch.cli import app
from tests.support.cli import REPO
from tests.support.pictures import make_pictures

LISTING_COMMANDS = ("query", "classify", "duplicates", "failures")
OUTPUT_FLAGS = {"--json": None, "--table": None, "--paths": None, "--print0": "-0", "--csv": None}


def _commands():
    return typer.main.get_command(app).commands


def _flags(command) -> dict[str, set[str]]:
    return {opt: set(p.opts + p.secondary_opts) for p in command.params for opt in p.opts if opt.startswith("--")}


@pytest.mark.parametrize("name", LISTING_COMMANDS)
def test_every_listing_command_has_the_same_output_flags(name):
    flags = _flags(_commands()[name])
    for flag, short in OUTPUT_FLAGS.items():
        assert flag in flags, f"{name} lacks {flag}"
        if short:
            assert short in flags[flag], f"{name} {flag} lacks {short}"


def test_every_command_and_flag_is_documented():
    """The reference generated from --help is current and holds every flag; the README
    shows every command."""
    check = subprocess.run([sys.executable, "scripts/cli_docs.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    reference = (REPO / "docs" / "cli.md").read_text()
    readme = (REPO / "README.md").read_text()
    for name, command in _commands().items():
        assert f"## photosearch {name}" in reference
        assert re.search(rf"photosearch {name}\b", readme), f"README never shows `photosearch {name}`"
        for param in command.params:
            for opt in param.opts + param.secondary_opts:
                if opt.startswith("--") and opt != "--help":
                    assert opt in reference, f"{name} {opt} missing from docs/cli.md"


@pytest.fixture
def odd_library(cli, tiny_model, tmp_path):
    """A library with a photo whose name isn't UTF-8, a near-duplicate pair and a failure."""
    folder = tmp_path / "pics"
    make_pictures(folder, 4)
    odd = os.fsencode(folder) + b"/caf\xe9.jpg"
    with open(odd, "wb") as f:
        f.write((folder / "photo000.jpg").read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    db = str(tmp_path / "lib.db")
    result = cli("index", str(folder), "--db", db, "--model", f"local-dir:{tiny_model}")
    assert result.exit_code == 3, result.stderr
    return {"db": db, "odd": odd, "folder": folder}


def _lines(result) -> list[dict]:
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_every_json_line_carries_schema_and_the_exact_name(cli, odd_library):
    db, odd = odd_library["db"], odd_library["odd"]
    exact = base64.b64encode(odd).decode()
    records = {
        "query": _lines(cli("query", "a circle", "-k", "10", "--json", "--db", db)),
        "classify": _lines(cli("classify", "--labels", "red,blue", "--json", "--db", db)),
        "duplicates": _lines(cli("duplicates", "-t", "0.9999", "--json", "--db", db)),
        "failures": _lines(cli("failures", "--json", "--db", db)),
    }
    for name, lines in records.items():
        assert lines and all(next(iter(line)) == "schema" and line["schema"] == 1 for line in lines), name
    photos = records["query"] + records["classify"] + [p for g in records["duplicates"] for p in g["photos"]]
    assert {p["path_bytes"] for p in photos if "path_bytes" in p} == {exact}
    assert all("path_bytes" not in p for p in photos if p["path"].endswith("photo000.jpg"))
    [pair] = [g for g in records["duplicates"] if any(p["path"].endswith("photo000.jpg") for p in g["photos"])]
    assert [base64.b64decode(p["path_bytes"]) for p in pair["photos"] if "path_bytes" in p] == [odd]
    [failure] = records["failures"]
    assert failure["path"].endswith("broken.jpg") and failure["reason"] and failure["failed_at"]
    assert list(failure) == ["schema", "path", "reason", "failed_at"]


def test_paths_print0_and_csv_for_every_listing_command(cli, odd_library):
    db, odd, folder = odd_library["db"], odd_library["odd"], odd_library["folder"]
    dup = cli("duplicates", "-t", "0.9999", "-0", "--db", db).stdout_bytes
    assert dup.endswith(b"\0\0")
    groups = [set(g.split(b"\0")) for g in dup[:-2].split(b"\0\0")]
    assert any({odd, os.fsencode(folder / "photo000.jpg")} <= g for g in groups)
    assert cli("duplicates", "-t", "0.9999", "--paths", "--db", db).stdout_bytes.endswith(b"\n\n")
    assert cli("failures", "--paths", "--db", db).stdout_bytes == os.fsencode(folder / "broken.jpg") + b"\n"
    tagged = cli("classify", "--labels", "red,blue", "-0", "--db", db).stdout_bytes.split(b"\0")
    assert odd in tagged and len(tagged) == 6  # 5 photos, each NUL-terminated
    rows = list(csv.DictReader(io.StringIO(cli("query", "a circle", "--csv", "--db", db).stdout)))
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 6)]
    assert set(rows[0]) == {"query", "rank", "score", "path", "width", "height", "size_bytes", "taken_at"}
    rows = list(csv.DictReader(io.StringIO(cli("duplicates", "-t", "0.9999", "--csv", "--db", db).stdout)))
    by_path = {r["path"]: r["group"] for r in rows}
    assert by_path[str(folder / "photo000.jpg")] == by_path[str(folder / "caf\ufffd.jpg")]
    assert set(rows[0]) == {"group", "similarity", "path", "width", "height", "size_bytes"}
    failures = list(csv.DictReader(io.StringIO(cli("failures", "--csv", "--db", db).stdout)))
    assert [r["path"] for r in failures] == [str(folder / "broken.jpg")]


def test_two_output_flags_are_refused_on_every_listing_command(cli, odd_library):
    for name in LISTING_COMMANDS:
        args = [name, "a circle"] if name == "query" else [name]
        if name == "classify":
            args += ["--labels", "red,blue"]
        result = cli(*args, "--csv", "--paths", "--db", odd_library["db"])
        assert result.exit_code == 2, name
        assert result.stderr == "Error: --paths and --csv exclude each other. Hint: pick one output format.\n"
