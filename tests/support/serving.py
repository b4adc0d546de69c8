"""`photosearch serve` run for real: a fresh process on a free loopback port, and plain HTTP
requests to it (http.client, so a test controls every byte: raw paths, Host headers)."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.cli import REPO

START_TIMEOUT_S = 120  # a cold start may import torch (a first text tower export)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT/ (with ?token=… when the server has one)
    process: subprocess.Popen
    stderr: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.url).port

    def request(self, method: str, target: str, *, headers: dict | None = None, body: bytes | None = None, timeout: float = 60) -> Answer:
        """One request, exactly as given: `target` is sent as the request line's path."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
            if body is not None:
                sent.setdefault("Content-Length", str(len(body)))
            for name, value in sent.items():
                if value is not None:
                    conn.putheader(name, value)
            conn.endheaders(body)
            response = conn.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def get(self, target: str, **kwargs) -> Answer:
        return self.request("GET", target, **kwargs)

    def api(self, path: str, **params) -> Answer:
        """GET path?params, a list value repeating its parameter."""
        query = urllib.parse.urlencode([(k, v) for k, vs in params.items() for v in (vs if isinstance(vs, list) else [vs])])
        return self.get(path + ("?" + query if query else ""))


@contextmanager
def running_server(db: Path, *args: str, env: dict | None = None) -> Iterator[Server]:
    """`photosearch serve --db DB --port 0` until the block ends; then SIGTERM, which must
    end it cleanly (exit code 0)."""
    full_env = {**os.environ, **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "photosearch", "serve", "--db", str(db), "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=REPO,
    )  # fmt: skip
    server = None
    try:
        url = _first_line(process, START_TIMEOUT_S)
        server = Server(url, process)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        err = process.stderr.read().decode("utf-8", "replace")
        if server is not None:
            server.stderr.append(err)
    assert process.returncode == 0, f"serve ended with {process.returncode}:\n{err}"


def _first_line(process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    buffered = b""
    while b"\n" not in buffered:
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            err = process.stderr.read().decode("utf-8", "replace") if process.poll() is not None else ""
            raise AssertionError(f"serve printed no URL within {timeout:g} s (exit {process.poll()}): {err}")
        ready, _, _ = select.select([process.stdout], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                continue
            buffered += chunk
    return buffered.split(b"\n", 1)[0].decode().strip()
