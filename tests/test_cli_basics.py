"""Start-up cost, --help/--version, entry points, info."""

from __future__ import annotations

import json

import pytest

from photosearch import __version__
from tests.support.cli import run_cli
from tests.support.pictures import make_pictures
from tests.support.probe import cli_code, probe

HEAVY = ("torch", "open_clip", "faiss", "numpy")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["index", "--help"], ["query", "--help"], ["info", "--help"], []])
def test_help_and_version_import_no_heavy_modules(args):
    run = probe(cli_code(*args), HEAVY, timeout=60)
    assert run.imported == set(), run.stderr


def test_version_and_module_entry_point():
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.decode() == f"photosearch {__version__}\n"
    help_proc = run_cli("--help")
    assert help_proc.returncode == 0
    for command in ("index", "query", "info", "failures"):
        assert command in help_proc.stdout.decode()


def test_unknown_option_is_a_usage_error():
    proc = run_cli("query", "x", "--no-such-flag")
    assert proc.returncode == 2
    assert b"No such option" in proc.stderr
    assert proc.stdout == b""


def test_info_reports_library_model_and_index(cli, tiny_model, tmp_path, isolated_home):
    before = json.loads(cli("info", "--json").stdout)
    assert before == {"library": str(isolated_home / "data" / "library.db"), "data_dir": str(isolated_home / "data"), "exists": False}
    make_pictures(tmp_path / "pics", 3)
    (tmp_path / "pics" / "bad.jpg").write_text("nope")
    cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tiny_model}")
    facts = json.loads(cli("info", "--json").stdout)
    assert facts["model"] == f"local-dir:{tiny_model}"
    assert facts["photos"] == 3
    assert facts["failures"] == 1
    assert facts["dim"] == 64
    assert facts["index_kind"] == "flat-ip"  # exact search below the IVF threshold
    assert facts["index_vectors"] == 3
    assert facts["index_status"] == "current"


def test_a_command_that_loaded_torch_exits_at_once_with_its_code_and_output(tiny_model, tmp_path):
    """Unloading torch takes most of a second; a finished command skips it, losing nothing:
    its exit code, its JSON on a pipe and its library are all there."""
    import sqlite3

    from tests.support.pictures import make_pictures

    make_pictures(tmp_path / "pics", 3)
    (tmp_path / "pics" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    db = str(tmp_path / "lib.db")
    index = run_cli("index", str(tmp_path / "pics"), "--db", db, "--model", f"local-dir:{tiny_model}")
    assert index.returncode == 3, index.stderr  # one photo skipped: partial success
    assert b"3 added" in index.stderr and b"broken.jpg" in index.stderr
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    env = {"PHOTOSEARCH_CACHE": str(tmp_path / "no-tower")}  # no text tower: this query loads torch
    query = run_cli("query", "a dog", "--db", db, "--json", env=env)
    assert query.returncode == 0, query.stderr
    assert len(query.stdout.splitlines()) == 3
