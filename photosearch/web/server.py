"""The HTTP side of `photosearch serve`: the standard library's threading HTTP server, with
the checks every request passes before the API sees it.

Why the standard library and not an ASGI stack: the gallery serves one person on one
machine; a thread per connection is plenty (a page's 48 thumbnails come over the browser's
six connections), it starts in milliseconds, and it adds no dependency to install.

A photo library is private, so:
- it binds to 127.0.0.1 unless told otherwise, and a non-loopback address needs a token
  (one is made and printed with the URL when none is given);
- a request whose Host header isn't the bound address or localhost is refused, which
  defeats DNS rebinding (a web page that makes its own name point at 127.0.0.1);
- with a token, every request carries it: `?token=` (the page then keeps it in a cookie
  of its own, SameSite=Strict), `Authorization: Bearer …` or that cookie;
- posts from another origin are refused, and responses forbid framing and other origins'
  scripts (Content-Security-Policy), so another site can't drive or read the gallery.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import socket
import traceback
import urllib.parse
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from photosearch.errors import UsageError
from photosearch.web.api import (
    MAX_UPLOAD_BYTES,
    ApiError,
    Gallery,
    Request,
    Response,
    error_response,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
COOKIE = "photosearch_token"
_CHUNK = 1 << 20
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def needs_token(host: str, token: str | None) -> str | None:
    """The token requests must carry: the one given; a new one for a non-loopback address
    (anyone on the network could otherwise read the library); none on loopback."""
    if token is not None:
        if len(token) < 8:
            raise UsageError("--token is too short to protect anything", "use 8 or more characters, or leave it out for a random one")
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(18)


def allowed_hosts(host: str) -> tuple[set[str], bool]:
    """Host header names (without port) this server answers to, and whether any IP
    address is one (bound to every address, it is reached by any of them)."""
    names = {"localhost", "127.0.0.1", "[::1]", host.lower(), f"[{host.lower()}]"}
    try:
        wildcard = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        wildcard = False
    if wildcard or not is_loopback(host):
        # Reached from the network, by this machine's names too. The token is what keeps
        # others out; the Host check keeps out web pages that rebind their own names.
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return names, wildcard


def _host_name(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


class GalleryServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never keeps the process from stopping
    allow_reuse_address = True

    def __init__(self, gallery: Gallery, host: str, port: int, *, token: str | None, log=None, quiet: bool = False):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.gallery, self.token, self.quiet = gallery, token, quiet
        self.log = log or (lambda message: None)
        self.hosts, self.any_ip = allowed_hosts(host)
        try:
            super().__init__((host.strip("[]"), port), Handler)
        except OSError as exc:
            hint = "pick another --port (0: any free one)" if port else "check --host"
            if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
                raise UsageError(f"port {port} on {host} is already in use", hint) from None
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint) from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if ipaddress.ip_address(host).is_unspecified:  # every address: name one that works
            host = socket.gethostname()
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: GalleryServer
    protocol_version = "HTTP/1.1"
    server_version = "photosearch"
    sys_version = ""
    timeout = 60  # a connection that stops talking is dropped, not kept forever
    # Headers and body go out in two writes: with Nagle's algorithm on, the body waits for
    # the client's delayed ACK of the headers, ~40 ms on every kept-alive response.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._answer("GET")

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def do_PATCH(self) -> None:
        self._answer("PATCH")

    def do_OPTIONS(self) -> None:
        self._answer("OPTIONS")

    def _answer(self, method: str) -> None:
        set_cookie = None
        try:
            split = urllib.parse.urlsplit(self.path)
            params = urllib.parse.parse_qs(split.query, keep_blank_values=True, max_num_fields=500)
            self._check_host()
            set_cookie = self._check_token(params)
            request = Request(
                method="GET" if method == "HEAD" else method,
                path=urllib.parse.unquote(split.path),
                params=params,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self._body(method),
            )
            if request.method == "POST":
                self._check_origin()
            response = self.server.gallery.handle(request)
        except ApiError as exc:
            response = error_response(exc)
        except ValueError as exc:  # parse_qs: too many fields, bad encoding
            response = error_response(ApiError(400, f"cannot read the request: {exc}", "check the URL"))
        except Exception as exc:  # a bug: the client hears that, the server's log says what
            self.server.log(f"error: {method} {self.path}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            response = error_response(ApiError(500, "internal error", "the server's log has the details; please report it"))
        if set_cookie:
            response.headers["Set-Cookie"] = f"{COOKIE}={set_cookie}; Path=/; HttpOnly; SameSite=Strict"
        self._send(response, head=method == "HEAD")

    # -- the checks -------------------------------------------------------------------------
    def _check_host(self) -> None:
        header = self.headers.get("Host")
        if not header:
            raise ApiError(400, "the request has no Host header", "use an HTTP/1.1 client")
        name = _host_name(header)
        if name in self.server.hosts or (self.server.any_ip and _is_ip(name)):
            return
        raise ApiError(403, f"this server doesn't answer to Host {header!r}", f"open {self.server.url}")

    def _check_token(self, params: dict[str, list[str]]) -> str | None:
        """Passes a request with the server's token; returns it when it came in the URL,
        so the page can be given the cookie that carries it from then on."""
        token = self.server.token
        if token is None:
            return None
        offered = params.get("token", [])
        if offered and hmac.compare_digest(offered[-1].encode(), token.encode()):
            return token
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip().encode(), token.encode()):
            return None
        try:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            cookie = SimpleCookie()
        if COOKIE in cookie and hmac.compare_digest(cookie[COOKIE].value.encode(), token.encode()):
            return None
        raise ApiError(401, "this server needs its token", "open the URL `photosearch serve` printed, which carries ?token=…")

    def _check_origin(self) -> None:
        origin = self.headers.get("Origin")
        if origin is None:
            return
        host = urllib.parse.urlsplit(origin).netloc
        if not host or host.lower() != (self.headers.get("Host") or "").lower():
            raise ApiError(403, f"posts from {origin} are refused", "use the gallery's own page")

    def _body(self, method: str) -> bytes | None:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise ApiError(411, "chunked request bodies are not read", "send Content-Length")
        if not length:
            return None
        try:
            size = int(length)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, f"Content-Length {length!r} is not a number", "send a valid Content-Length") from None
        if size < 0 or size > MAX_UPLOAD_BYTES:
            self.close_connection = True  # the body is left unread: this connection is done
            raise ApiError(413, f"the request body is {size} bytes", f"send an image under {MAX_UPLOAD_BYTES >> 20} MiB")
        return self.rfile.read(size)

    # -- the answer -------------------------------------------------------------------------
    def _send(self, response: Response, *, head: bool) -> None:
        try:
            self.send_response(response.status)
            headers = {**_SECURITY_HEADERS, **response.headers}
            length = response.length if response.file is not None else len(response.body)
            if response.status != 304:
                headers["Content-Type"] = response.content_type
                headers["Content-Length"] = str(length)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if head or response.status == 304:
                return
            if response.file is None:
                self.wfile.write(response.body)
                return
            remaining = length or 0
            while remaining > 0:
                chunk = response.file.read(min(_CHUNK, remaining))
                if not chunk:  # the file shrank while being sent: end the connection honestly
                    self.close_connection = True
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the browser moved on (a tile scrolled away)
        finally:
            if response.file is not None:
                response.file.close()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's own refusals (a malformed request line, an unknown method, a URL
        too long) in the API's JSON, like every other error."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        body = (json.dumps({"error": message or phrase, "hint": explain or "check the request"}) + "\n").encode()
        self.log_error("%d %s", code, message or phrase)
        self.send_response(code, message)
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        if code >= 200 and code not in (HTTPStatus.NO_CONTENT, HTTPStatus.RESET_CONTENT, HTTPStatus.NOT_MODIFIED):
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        else:
            self.end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        if not self.server.quiet:
            self.server.log(f"{self.address_string()} {format % args}")

    def log_error(self, format: str, *args) -> None:  # noqa: A002
        self.server.log(f"{self.address_string()} {format % args}")


def serve_forever(server: GalleryServer) -> None:
    """Serve until interrupted (KeyboardInterrupt: Ctrl-C, or SIGTERM where the caller
    turns it into one), then close the socket."""
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
