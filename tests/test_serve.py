"""`photosearch serve`: the JSON API, run for real on a free loopback port and asked over
HTTP. It must answer what the CLI answers (same photos, same scores), page through results,
refuse bad requests with a JSON 400, and keep working while another process indexes."""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.support.cli import cli_json as run_json
from tests.support.cli import indexed
from tests.support.pictures import make_pictures
from tests.support.serving import running_server
from tests.support.tiny import write_random_tiny

YEAR_2019 = 1_560_000_000  # mtimes (no EXIF in these pictures: capture time is the mtime)
YEAR_2021 = 1_620_000_000


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A library of 16 pictures in two folders (2019 and 2021), its settings, and a server."""
    root = tmp_path_factory.mktemp("serve")
    env = {"PHOTOSEARCH_HOME": str(root / "home"), "PHOTOSEARCH_CACHE": str(root / "cache")}
    model = write_random_tiny(root / "model", seed=0)
    pictures = root / "pictures"
    for name, seed, when in (("2019", 1, YEAR_2019), ("2021", 2, YEAR_2021)):
        for path in make_pictures(pictures / name, 8, seed=seed, prefix=f"p{name}_"):
            os.utime(path, (when, when))
    db = root / "library.db"
    indexed(db, pictures, f"local-dir:{model}", env)
    with running_server(db, "--quiet", env=env) as server:
        yield {"root": root, "db": db, "env": env, "pictures": pictures, "server": server, "model": model}


def cli_json(setup, *args: str) -> list[dict]:
    return run_json(setup["db"], setup["env"], *args)


def without_id(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "id"}


def test_a_text_search_answers_what_the_cli_answers_with_ids(setup):
    server = setup["server"]
    answer = server.api("/api/search", q="a red square", top=6)
    assert answer.status == 200 and answer.headers["content-type"] == "application/json"
    page = answer.json()
    assert page["schema"] == 1 and page["query"] == "a red square" and page["more"] is True
    assert [without_id(r) for r in page["results"]] == cli_json(setup, "query", "a red square", "-k", "6")
    for record in page["results"]:
        photo = server.get(f"/api/photos/{record['id']}").json()
        assert photo["path"] == record["path"] and photo["id"] == record["id"]
        assert photo["name"] == Path(record["path"]).name and photo["folder"] == str(Path(record["path"]).parent)


def test_results_come_in_pages_that_join_up(setup):
    server = setup["server"]
    whole = server.api("/api/search", q="blue", top=16).json()["results"]
    pages, offset = [], 0
    while True:
        page = server.api("/api/search", q="blue", top=5, offset=offset).json()
        pages += page["results"]
        offset += 5
        if not page["more"]:
            break
        assert offset < 100, "paging never ended"
    assert [r["id"] for r in pages] == [r["id"] for r in whole]
    assert [r["rank"] for r in pages] == list(range(1, 17))


def test_more_like_this_and_less_like_this_are_the_cli_image_terms(setup):
    server = setup["server"]
    first = server.api("/api/search", q="green", top=3).json()["results"]
    liked, unliked = first[0], first[1]
    like = server.api("/api/search", like=liked["id"], top=5).json()
    assert like["query"] == f"photo {liked['id']}"
    assert liked["id"] not in [r["id"] for r in like["results"]]  # the query photo itself is left out
    cli = cli_json(setup, "query", liked["path"], "-k", "5")
    assert [(r["path"], r["score"]) for r in like["results"]] == [(r["path"], r["score"]) for r in cli]
    less = server.api("/api/search", q="green", sub=f"photo:{unliked['id']}", top=5).json()["results"]
    cli_less = cli_json(setup, "query", "green", "--sub", unliked["path"], "-k", "5")
    assert [(r["path"], r["score"]) for r in less] == [(r["path"], r["score"]) for r in cli_less]
    assert unliked["id"] not in [r["id"] for r in less]


def test_filters_are_the_cli_filters(setup):
    server = setup["server"]
    folder_2021 = str(setup["pictures"] / "2021")
    cases = [
        ({"in": folder_2021}, ["--in", folder_2021]),
        ({"since": "2020-01-01"}, ["--since", "2020-01-01"]),
        ({"until": "2019-12-31", "min_width": "200"}, ["--until", "2019-12-31", "--min-width", "200"]),
    ]
    for params, flags in cases:
        api = server.api("/api/search", q="a photo", top=16, **params).json()["results"]
        cli = cli_json(setup, "query", "a photo", "-k", "16", *flags)
        assert [without_id(r) for r in api] == cli, params
        assert api, params
    in_2021 = server.api("/api/search", q="a photo", top=16, since="2021").json()["results"]
    assert {Path(r["path"]).parent.name for r in in_2021} == {"2021"}


def test_negations_are_read_as_the_cli_reads_them(setup):
    server = setup["server"]
    page = server.api("/api/search", q="a red square without blue", top=6).json()
    assert page["query"] == "a red square without blue"
    assert page["parsed"] == {"text": "a red square", "sub": ["blue"]} and page["note"] is None
    assert [without_id(r) for r in page["results"]] == cli_json(setup, "query", "a red square without blue", "-k", "6")
    assert all(r["parsed"] == page["parsed"] for r in page["results"])
    literal = server.api("/api/search", q="a red square without blue", top=6, literal="true").json()
    assert literal["parsed"] is None and literal["note"] is None
    assert [without_id(r) for r in literal["results"]] == cli_json(setup, "query", "a red square without blue", "-k", "6", "--literal")
    assert [r["id"] for r in literal["results"]] != [r["id"] for r in page["results"]]
    nothing_left = server.api("/api/search", q="not blue", top=3).json()
    assert nothing_left["parsed"] is None
    assert nothing_left["note"] == 'nothing would be left to look for once "blue" is taken away'


def test_within_and_sort_are_the_cli_options(setup):
    server = setup["server"]
    every = server.api("/api/search", q="green", top=16).json()["results"]
    d = every[0]["score"] - (every[4]["score"] + every[5]["score"]) / 2  # keeps the best five
    close = server.api("/api/search", q="green", top=16, within=f"{d:.6f}").json()
    assert [r["id"] for r in close["results"]] == [r["id"] for r in every[:5]] and close["more"] is False
    assert [without_id(r) for r in close["results"]] == cli_json(setup, "query", "green", "-k", "16", "--within", f"{d:.6f}")
    for sort in ("date", "path"):
        sorted_page = server.api("/api/search", q="green", top=10, k=10, sort=sort).json()["results"]
        assert [without_id(r) for r in sorted_page] == cli_json(setup, "query", "green", "-k", "10", "--sort", sort), sort
        assert {r["id"] for r in sorted_page} == {r["id"] for r in every[:10]}


def test_sorted_results_page_through_one_set(setup):
    server = setup["server"]
    whole = server.api("/api/search", q="blue", top=12, k=12, sort="path").json()
    assert whole["more"] is False and len(whole["results"]) == 12
    pages, offset = [], 0
    while True:
        page = server.api("/api/search", q="blue", top=5, offset=offset, k=12, sort="path").json()
        pages += page["results"]
        offset += 5
        if not page["more"]:
            break
    assert [r["id"] for r in pages] == [r["id"] for r in whole["results"]]
    assert [r["path"] for r in pages] == sorted(r["path"] for r in pages)
    by_date = server.api("/api/search", q="blue", top=48, sort="date").json()["results"]
    assert len(by_date) == 16  # the whole library is fewer than the 200 best a date sort orders
    dates = [r["taken_at"] for r in by_date]
    assert dates == sorted(dates, reverse=True)


def test_duplicates_are_the_cli_groups_with_ids(setup):
    server = setup["server"]
    answer = server.api("/api/duplicates", threshold="0.99").json()
    cli = cli_json(setup, "duplicates", "--threshold", "0.99")
    assert answer["schema"] == 1
    assert [{**g, "photos": [without_id(p) for p in g["photos"]]} for g in answer["groups"]] == cli
    for group in answer["groups"]:
        for photo in group["photos"]:
            assert server.get(f"/api/photos/{photo['id']}").json()["path"] == photo["path"]


def test_thumbnails_and_originals_are_the_photos(setup):
    server = setup["server"]
    hit = server.api("/api/search", q="yellow", top=1).json()["results"][0]
    thumb = server.get(f"/api/photos/{hit['id']}/thumbnail")
    assert thumb.status == 200 and thumb.headers["content-type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(thumb.body))
    assert picture.format == "JPEG" and max(picture.size) <= 320
    assert abs(picture.size[0] / picture.size[1] - hit["width"] / hit["height"]) < 0.05
    again = server.get(f"/api/photos/{hit['id']}/thumbnail", headers={"If-None-Match": thumb.headers["etag"]})
    assert again.status == 304 and again.body == b""
    original = server.get(f"/api/photos/{hit['id']}/original")
    assert original.status == 200 and original.headers["content-type"] == "image/jpeg"
    assert original.body == Path(hit["path"]).read_bytes()
    assert Path(hit["path"]).name in original.headers["content-disposition"]


def test_an_uploaded_image_is_an_image_query(setup):
    server = setup["server"]
    photo = sorted((setup["pictures"] / "2019").iterdir())[0]
    answer = server.request("POST", "/api/search?top=4", body=photo.read_bytes(), headers={"Content-Type": "image/jpeg"})
    assert answer.status == 200, answer.body
    page = answer.json()
    assert page["query"] == "uploaded image"
    # The same pixels as an indexed photo: that photo comes first, as close as can be.
    assert page["results"][0]["path"] == str(photo) and page["results"][0]["score"] > 0.999
    bad = server.request("POST", "/api/search", body=b"not an image", headers={"Content-Type": "image/jpeg"})
    assert bad.status == 400 and "error" in bad.json()


@pytest.mark.parametrize(
    "target, status, says",
    [
        ("/api/search", 400, "no query"),
        ("/api/search?q=", 400, "no query"),
        ("/api/search?q=red&top=abc", 400, "top"),
        ("/api/search?q=red&top=0", 400, "top"),
        ("/api/search?q=red&top=100000", 400, "top"),
        ("/api/search?q=red&offset=-1", 400, "offset"),
        ("/api/search?q=red&threshold=2", 400, "threshold"),
        ("/api/search?q=red&since=yesterday", 400, "since"),
        ("/api/search?q=red&min_width=wide", 400, "min_width"),
        ("/api/search?q=red&ensemble=maybe", 400, "ensemble"),
        ("/api/search?q=red&template=no+placeholder", 400, "template"),
        ("/api/search?q=red&colour=blue", 400, "colour"),
        ("/api/search?q=red&like=1", 400, "two queries"),
        ("/api/search?q=red&within=-0.1", 400, "within"),
        ("/api/search?q=red&within=close", 400, "within"),
        ("/api/search?q=red&sort=size", 400, "sort"),
        ("/api/search?q=red&sort=date&sort=path", 400, "2 times"),
        ("/api/search?q=red&literal=maybe", 400, "literal"),
        ("/api/search?q=red&k=0", 400, "k"),
        ("/api/search?q=red&q=blue", 400, "2 times"),
        ("/api/search?like=999999", 404, "999999"),
        ("/api/search?q=red&sub=photo:999999", 404, "999999"),
        ("/api/duplicates?threshold=x", 400, "threshold"),
        ("/api/photos/999999", 404, "999999"),
        ("/api/photos/999999/thumbnail", 404, "999999"),
        ("/api/photos/abc", 404, "nothing at"),
        ("/api/nothing", 404, "nothing at"),
    ],
)
def test_bad_requests_get_a_json_error_with_a_hint(setup, target, status, says):
    answer = setup["server"].get(target)
    assert answer.status == status, answer.body
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) == {"error", "hint"} and body["hint"]
    assert says in body["error"]
    assert b"Traceback" not in answer.body


def test_wrong_methods_and_malformed_requests_get_json_too(setup):
    server = setup["server"]
    assert server.request("DELETE", "/api/photos/1").status == 405
    assert server.request("PUT", "/api/search?q=x", body=b"x").status == 405
    for answer in (server.request("BREW", "/"), server.request("GET", "/" + "a" * 70_000)):
        assert answer.status in (400, 414, 501)
        assert "error" in json.loads(answer.body)


def test_the_page_and_its_assets_are_served_locally(setup):
    server = setup["server"]
    page = server.get("/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    html = page.body.decode()
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    for asset in ("/static/app.js", "/static/app.css", "/static/favicon.svg"):
        answer = server.get(asset)
        assert answer.status == 200 and answer.body
        assert b"https://" not in answer.body
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_the_server_keeps_answering_while_another_process_indexes(setup, tmp_path):
    """Live library: `index` runs next door (so the server holds no writer lock), every
    request meanwhile succeeds, and the new photos are found once the index commits."""
    from tests.support.cli import run_cli

    db_copy = tmp_path / "live.db"
    shutil.copy(setup["db"], db_copy)
    pictures = setup["pictures"]
    with running_server(db_copy, "--quiet", env=setup["env"]) as server:
        before = server.api("/api/info").json()["photos"]
        new = make_pictures(tmp_path / "new", 6, seed=9, prefix="fresh_")
        stop, errors, answered = threading.Event(), [], []

        def keep_asking():
            while not stop.is_set() and len(answered) < 2000:  # bounded
                answer = server.api("/api/search", q="red", top=20)
                (answered if answer.status == 200 else errors).append(answer.status)

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            indexed = run_cli("index", str(pictures), str(tmp_path / "new"), "--db", str(db_copy), "--quiet", env=setup["env"])
        finally:
            stop.set()
            asker.join(timeout=60)
        assert indexed.returncode == 0, indexed.stderr.decode()
        assert not errors and answered
        assert server.api("/api/info").json()["photos"] == before + len(new)
        found = server.api("/api/search", q="a photo", top=before + len(new)).json()["results"]
        assert {str(p) for p in new} <= {r["path"] for r in found}


def test_serve_needs_a_library_and_a_free_port(setup, tmp_path):
    from tests.support.cli import run_cli

    missing = run_cli("serve", "--db", str(tmp_path / "none.db"), "--port", "0", env=setup["env"], timeout=60)
    assert missing.returncode == 1
    assert missing.stderr.decode().count("\n") == 1 and "no photo library" in missing.stderr.decode()
    busy = run_cli("serve", "--db", str(setup["db"]), "--port", str(setup["server"].port), env=setup["env"], timeout=60)
    assert busy.returncode == 2 and "already in use" in busy.stderr.decode()
    assert busy.stdout == b""


def test_serve_help_is_instant_and_names_the_defaults(setup):
    from tests.support.cli import run_cli

    started = time.monotonic()
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "--host" in text and "127.0.0.1" in text and "8765" in text and "--token" in text and "--open" in text
    assert time.monotonic() - started < 10  # generous: a fresh interpreter on a busy CI box


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended while we looked
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_serve_stops_cleanly_while_its_faster_text_tower_is_still_being_made(tmp_path):
    """A fresh cache: the server answers with the numpy text tower while a child process
    exports the ONNX one. Stopping the server then must exit 0, end the child, and leave
    no half-written export in the cache (it is made again next time, whole)."""
    env = {"PHOTOSEARCH_HOME": str(tmp_path / "home"), "PHOTOSEARCH_CACHE": str(tmp_path / "cache")}
    model = write_random_tiny(tmp_path / "model", seed=0)
    make_pictures(tmp_path / "pictures", 4, seed=3)
    db = tmp_path / "library.db"
    indexed(db, tmp_path / "pictures", f"local-dir:{model}", env)
    towers = tmp_path / "cache" / "text-towers"
    with running_server(db, "--quiet", env=env) as server:
        exporting = _children(server.process.pid)
        assert exporting, "no child process is making the ONNX text tower"
        assert server.api("/api/search", q="a red square", top=2).json()["results"]
        deadline = time.monotonic() + 60
        while not list(towers.glob("*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(towers.glob("*.tmp")), "the export never started writing"
    for pid in exporting:
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists(), "the export child outlived the server"
    assert [p.name for p in towers.glob("*.tmp")] == []
