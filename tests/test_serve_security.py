"""A photo library is private: each attack on `photosearch serve` tried for real.

Path tricks, Host headers from DNS rebinding, a photo swapped for a symlink after indexing,
an edited photo, requests without the token, posts from another site, a bug in a handler:
none reaches a file outside the library, a stale picture, or a traceback. And the server
never writes to a photo, nor to the library beyond its cache of query vectors."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from tests.support.cli import cli_json, indexed
from tests.support.pictures import make_pictures
from tests.support.serving import running_server
from tests.support.tiny import write_random_tiny

SECRET = b"the secret diary of someone who uses photosearch\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    env = {"PHOTOSEARCH_HOME": str(root / "home"), "PHOTOSEARCH_CACHE": str(root / "cache")}
    model = write_random_tiny(root / "model", seed=0)
    pictures = make_pictures(root / "pictures", 8, seed=3)
    (root / "secret.txt").write_bytes(SECRET)
    db = root / "library.db"
    ids = {os.fspath(p.path): p.id for p in indexed(db, root / "pictures", f"local-dir:{model}", env)}
    before = _fingerprint_everything(db, pictures)
    with running_server(db, env=env) as server:
        yield {"root": root, "db": db, "env": env, "pictures": pictures, "ids": ids, "server": server}
    # After every attack of this module: no photo was touched, and the library differs
    # from before at most in its cache of query vectors.
    assert _fingerprint_everything(db, pictures) == before


def _fingerprint_everything(db: Path, pictures: list[Path]) -> dict:
    conn = sqlite3.connect(db)
    try:
        tables = {}
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'query_cache'"):
            tables[name] = hashlib.sha256(repr(conn.execute(f"SELECT * FROM {name} ORDER BY 1").fetchall()).encode()).hexdigest()
    finally:
        conn.close()
    files = {}
    for path in pictures:
        if path.exists() and not path.is_symlink():
            st = path.stat()
            files[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns)
    return {"tables": tables, "files": files}


TRAVERSALS = [
    "/../secret.txt",
    "/../../../../etc/passwd",
    "/static/../secret.txt",
    "/static/..%2f..%2fsecret.txt",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/static/%2e%2e/%2e%2e/secret.txt",
    "//etc/passwd",
    "/api/photos/1/../../../../secret.txt",
    "/api/photos/1%2f..%2f..%2f..%2fsecret.txt/original",
    "/api/photos/..%2f..%2fsecret.txt/original",
    "/api/photos/-1/original",
    "/api/photos/1.0/original",
    "/api/photos/%31/original%00.txt",
    "/api/photos/1/original?path=../secret.txt",
    "/api/search?q=../secret.txt&like=../../secret.txt",
    "/static/index.html",  # only the names the page uses are served, not the folder
    "/static/",
    "/library.db",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_paths_in_the_request_reach_no_file_outside_the_library(setup, target):
    answer = setup["server"].get(target)
    assert SECRET not in answer.body and b"root:" not in answer.body
    assert answer.status in (400, 404), (target, answer.status, answer.body[:200])
    assert answer.headers["content-type"] == "application/json"


def test_words_that_name_a_file_are_searched_as_words(setup):
    """The CLI reads an existing path as an image query; over HTTP words stay words, so a
    request can't make the server open /etc/passwd or a photo outside the library."""
    server = setup["server"]
    secret = str(setup["root"] / "secret.txt")
    answer = server.api("/api/search", q=secret, top=3)
    assert answer.status == 200 and answer.json()["query"] == secret
    outside = make_pictures(setup["root"] / "outside", 1, seed=99)[0]
    as_words = server.api("/api/search", q=str(outside), top=3)
    assert as_words.status == 200
    # A text query for that string, not the picture's pixels: the CLI's --text answer.
    scores = [r["score"] for r in as_words.json()["results"]]
    assert scores == [r["score"] for r in _cli_json(setup, "query", str(outside), "--text", "-k", "3")]
    assert scores != [r["score"] for r in _cli_json(setup, "query", str(outside), "-k", "3")]
    assert server.api("/api/search", q="red", add="/etc/passwd", sub=secret).status == 200


def _cli_json(setup, *args: str) -> list[dict]:
    return cli_json(setup["db"], setup["env"], *args)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}", "localhost.evil.example", "192.168.1.20:{port}", ""])
def test_other_host_names_are_refused(setup, host):
    """DNS rebinding: a page at evil.example that resolves its name to 127.0.0.1 sends
    `Host: evil.example`; it must get nothing."""
    server = setup["server"]
    answer = server.get("/api/search?q=red", headers={"Host": host.format(port=server.port)})
    assert answer.status in (400, 403)
    assert b"results" not in answer.body and answer.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "127.0.0.1", "localhost"])
def test_loopback_host_names_are_answered(setup, host):
    server = setup["server"]
    assert server.get("/api/info", headers={"Host": host.format(port=server.port)}).status == 200


def test_a_photo_swapped_for_a_symlink_after_indexing_is_not_followed(setup):
    server, root = setup["server"], setup["root"]
    victim = setup["pictures"][0]
    photo_id = setup["ids"][str(victim)]
    assert server.get(f"/api/photos/{photo_id}/original").status == 200
    saved = victim.read_bytes(), victim.stat()
    victim.unlink()
    try:
        for target in (root / "secret.txt", setup["pictures"][1]):
            if victim.is_symlink():
                victim.unlink()
            victim.symlink_to(target)
            for what in ("original", "thumbnail"):
                answer = server.get(f"/api/photos/{photo_id}/{what}")
                assert answer.status == 409, (what, target, answer.status)
                assert SECRET not in answer.body and answer.json()["hint"]
    finally:
        if victim.is_symlink() or victim.exists():
            victim.unlink()
        victim.write_bytes(saved[0])
        os.utime(victim, ns=(saved[1].st_atime_ns, saved[1].st_mtime_ns))
    assert server.get(f"/api/photos/{photo_id}/original").status == 200


def test_a_symlink_with_the_same_size_and_time_is_still_caught(setup):
    """The strongest swap: a symlink to a file faked to the photo's size and mtime. The
    content fingerprint, checked on the opened file, still refuses it."""
    server, root = setup["server"], setup["root"]
    victim = setup["pictures"][2]
    photo_id = setup["ids"][str(victim)]
    saved, st = victim.read_bytes(), victim.stat()
    fake = root / "fake.jpg"
    fake.write_bytes((SECRET * (st.st_size // len(SECRET) + 1))[: st.st_size])
    os.utime(fake, ns=(st.st_atime_ns, st.st_mtime_ns))
    victim.unlink()
    victim.symlink_to(fake)
    try:
        answer = server.get(f"/api/photos/{photo_id}/original")
        assert answer.status == 409 and SECRET not in answer.body
    finally:
        victim.unlink()
        victim.write_bytes(saved)
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_an_edited_or_deleted_photo_is_never_shown_stale(setup):
    server = setup["server"]
    victim = setup["pictures"][3]
    photo_id = setup["ids"][str(victim)]
    assert server.get(f"/api/photos/{photo_id}/thumbnail").status == 200  # now cached
    saved, st = victim.read_bytes(), victim.stat()
    try:
        victim.write_bytes(saved + b"\0edited")
        for what in ("thumbnail", "original"):
            answer = server.get(f"/api/photos/{photo_id}/{what}")
            assert answer.status == 409 and "changed" in answer.json()["error"]
        victim.unlink()
        for what in ("thumbnail", "original"):
            answer = server.get(f"/api/photos/{photo_id}/{what}")
            assert answer.status == 410 and "gone" in answer.json()["error"]
    finally:
        victim.write_bytes(saved)
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert server.get(f"/api/photos/{photo_id}/thumbnail").status == 200


def test_a_post_from_another_site_is_refused(setup):
    server = setup["server"]
    photo = setup["pictures"][4].read_bytes()
    answer = server.request("POST", "/api/search", body=photo, headers={"Origin": "https://evil.example", "Content-Type": "image/jpeg"})
    assert answer.status == 403 and b"results" not in answer.body
    ours = server.request("POST", "/api/search", body=photo, headers={"Origin": f"http://127.0.0.1:{server.port}", "Content-Type": "image/jpeg"})
    assert ours.status == 200


def test_an_oversized_upload_is_refused_unread(setup):
    server = setup["server"]
    answer = server.request("POST", "/api/search", body=b"", headers={"Content-Length": str(10**10)})
    assert answer.status == 413 and answer.json()["hint"]


def test_with_a_token_every_request_must_carry_it(setup):
    token = "correct-horse-battery-staple"
    with running_server(setup["db"], "--quiet", "--token", token, env=setup["env"]) as server:
        assert server.url.endswith(f"?token={token}")
        for target in ("/", "/api/info", "/api/search?q=red", f"/api/photos/{min(setup['ids'].values())}/thumbnail", "/static/app.js"):
            refused = server.get(target)
            assert refused.status == 401 and b"results" not in refused.body, target
            assert server.get(target, headers={"Authorization": "Bearer wrong-token-here"}).status == 401
            assert server.get(target + ("&" if "?" in target else "?") + "token=wrong").status == 401
            assert server.get(target, headers={"Cookie": "photosearch_token=wrong"}).status == 401
        first = server.get(f"/?token={token}")
        assert first.status == 200
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert server.get("/api/info", headers={"Cookie": cookie.split(";")[0]}).status == 200
        assert server.get("/api/info", headers={"Authorization": f"Bearer {token}"}).status == 200


def test_a_network_address_gets_a_token_even_when_none_is_given():
    from photosearch.errors import UsageError
    from photosearch.web import needs_token

    assert needs_token("127.0.0.1", None) is None and needs_token("localhost", None) is None and needs_token("::1", None) is None
    made = needs_token("0.0.0.0", None)
    assert made and len(made) >= 20 and made != needs_token("0.0.0.0", None)
    assert needs_token("192.168.1.5", "s3cret-given") == "s3cret-given"
    with pytest.raises(UsageError):
        needs_token("0.0.0.0", "short")


def test_a_bug_in_a_handler_is_a_json_500_without_a_traceback(setup, monkeypatch):
    """Run the real server in this process, with a Library whose search breaks."""
    import http.client

    from photosearch import Library
    from photosearch.web import Gallery, GalleryServer

    for key, value in setup["env"].items():
        monkeypatch.setenv(key, value)
    logged: list[str] = []
    with Library.open(setup["db"]) as library:

        def broken(*args, **kwargs):
            raise RuntimeError("a bug with a secret path /home/someone/.ssh")

        monkeypatch.setattr(library, "search", broken)
        server = GalleryServer(Gallery(library), "127.0.0.1", 0, token=None, log=logged.append, quiet=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
            conn.request("GET", "/api/search?q=red")
            response = conn.getresponse()
            body = response.read()
            conn.close()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
    assert response.status == 500
    assert b"Traceback" not in body and b".ssh" not in body and b"RuntimeError" not in body
    assert b'"error": "internal error"' in body
    assert any("Traceback" in line and "RuntimeError" in line for line in logged)  # the server's log has it
