"""The gallery's JSON API: HTTP requests in, `Library` calls, records out.

Nothing here knows about sockets: `Gallery.handle` takes a `Request` and gives a `Response`,
so the whole API is one function to test. The HTTP server (server.py) does the transport
and the checks every request passes first (Host, token).

What a request can reach is what the library holds, by photo id: words are always words
(never looked up as a file), an image query is a photo id or an uploaded image, and files
are only ever the indexed photos, re-checked against the library before a byte is sent
(photosearch/thumbnails.py). The only library write a request may cause is the cache of
query vectors.
"""

from __future__ import annotations

import json
import mimetypes
import os
import re
import tempfile
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from photosearch import output
from photosearch.errors import NotFoundError, PhotosearchError, UsageError

MAX_RESULTS = 10_000  # offset + top: deep enough to page through any real search
DEFAULT_TOP = 48
DEFAULT_SORTED = 200  # with sort=date or path: how many of the best matches are ordered
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
STATIC = Path(__file__).with_name("static")
# The page's files, by the name a request may ask for: nothing else under static/ is served.
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
    "/static/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/static/map.js": ("map.js", "text/javascript; charset=utf-8"),  # the Map view (photosearch/map)
}


class ApiError(Exception):
    """An answer that isn't a result: its HTTP status and a JSON {error, hint}."""

    def __init__(self, status: int, error: str, hint: str | None = None):
        super().__init__(error)
        self.status, self.error, self.hint = status, error, hint

    def body(self) -> dict:
        return {"error": self.error, "hint": self.hint}


@dataclass
class Request:
    method: str
    path: str  # decoded, without the query string
    params: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes | None = None


@dataclass
class Response:
    status: int = 200
    content_type: str = "application/json"
    body: bytes = b""
    file: BinaryIO | None = None  # streamed instead of `body`, then closed
    length: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value, status: int = 200) -> "Response":
        return cls(status, "application/json", (json.dumps(value, ensure_ascii=False) + "\n").encode())


def error_response(exc: ApiError) -> Response:
    return Response.json(exc.body(), exc.status)


# -- parameters -----------------------------------------------------------------------------


class Params:
    """A request's query parameters, read by name; each read checks its value, and names
    nobody read are refused (a typo must not silently mean "no filter")."""

    def __init__(self, raw: dict[str, list[str]], ignored: tuple[str, ...] = ("token",)):
        self.raw = {k: v for k, v in raw.items() if k not in ignored}
        self.read: set[str] = set()

    def _values(self, name: str) -> list[str]:
        self.read.add(name)
        return [v for v in self.raw.get(name, []) if v.strip() != ""]

    def text(self, name: str) -> str | None:
        values = self._values(name)
        if len(values) > 1:
            raise ApiError(400, f"parameter {name} is given {len(values)} times", f"give {name} once")
        return values[0] if values else None

    def texts(self, name: str) -> list[str]:
        return self._values(name)

    def integer(self, name: str, default: int | None, *, low: int, high: int | None = None) -> int | None:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ApiError(400, f"{name}={value!r} is not a whole number", f"give {name} as a number, e.g. {name}={low}") from None
        if number < low or (high is not None and number > high):
            limit = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise ApiError(400, f"{name}={number} is out of range", f"use {limit}")
        return number

    def number(self, name: str, *, low: float, high: float) -> float | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            number = float(value)
        except ValueError:
            raise ApiError(400, f"{name}={value!r} is not a number", f"give {name} as a number from {low:g} to {high:g}") from None
        if not low <= number <= high:
            raise ApiError(400, f"{name}={number:g} is out of range", f"use a number from {low:g} to {high:g}")
        return number

    def flag(self, name: str, default: bool) -> bool:
        value = self.text(name)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ApiError(400, f"{name}={value!r} is not true or false", f"use {name}=true or {name}=false")

    def check_all_read(self, known_extra: tuple[str, ...] = ()) -> None:
        unknown = sorted(set(self.raw) - self.read - set(known_extra))
        if unknown:
            known = ", ".join(sorted(self.read | set(known_extra)))
            raise ApiError(400, f"unknown parameter {unknown[0]!r}", f"this endpoint takes: {known}")


def _filters(params: Params):
    from photosearch.filters import Filters

    return Filters(
        in_dirs=params.texts("in"),
        globs=params.texts("glob"),
        since=params.text("since"),
        until=params.text("until"),
        min_width=params.integer("min_width", None, low=1),
        min_height=params.integer("min_height", None, low=1),
    )


_PHOTO_TERM = re.compile(r"^photo:(\d{1,18})$")


def _term(raw: str):
    """`photo:ID` is a photo of the library (more or less like it); anything else is words,
    with the CLI's `W:words` weights."""
    match = _PHOTO_TERM.match(raw.strip())
    return int(match.group(1)) if match else raw


# -- the API --------------------------------------------------------------------------------


class Gallery:
    """The web app over one open Library. Requests come from many threads; a Library is
    for one thread at a time, so every call into it holds `lock`. Making a thumbnail (the
    slow part of a page) happens outside it, on the request's own thread."""

    def __init__(self, library, *, on_log: Callable[[str], None] | None = None):
        self.library = library
        self.lock = threading.Lock()
        self.log = on_log or (lambda message: None)
        self._routes = [
            (re.compile(r"^/api/search$"), self.search),
            (re.compile(r"^/api/duplicates$"), self.duplicates),
            (re.compile(r"^/api/info$"), self.info),
            (re.compile(r"^/api/photos/(\d{1,18})$"), self.photo),
            (re.compile(r"^/api/photos/(\d{1,18})/thumbnail$"), self.thumbnail),
            (re.compile(r"^/api/photos/(\d{1,18})/original$"), self.original),
            (re.compile(r"^/api/map$"), self.map),
            (re.compile(r"^/api/map/clusters/(\d{1,6})$"), self.map_cluster),
        ]
        self._map = None  # (what it was made of, the LibraryMap): the Map view's last map

    def warm_up(self) -> None:
        """Load what a text query needs now, so the first search doesn't pay for it."""
        with self.lock:
            self.library.warm_up()

    def handle(self, request: Request) -> Response:
        try:
            if request.path in STATIC_FILES:
                _allow(request, "GET", "HEAD")
                return self.static(request.path)
            for pattern, endpoint in self._routes:
                match = pattern.match(request.path)
                if match:
                    return endpoint(request, *match.groups())
            raise ApiError(404, f"nothing at {request.path}", "the API is under /api/: see docs/web.md")
        except ApiError as exc:
            return error_response(exc)
        except PhotosearchError as exc:
            return error_response(_as_api_error(exc))

    # -- endpoints --------------------------------------------------------------------------
    def static(self, path: str) -> Response:
        name, kind = STATIC_FILES[path]
        response = Response(200, kind, (STATIC / name).read_bytes())
        response.headers["Cache-Control"] = "no-cache"
        return response

    def search(self, request: Request) -> Response:
        _allow(request, "GET", "POST")
        params = Params(request.params)
        words, like = params.text("q"), params.integer("like", None, low=1)
        top = params.integer("top", DEFAULT_TOP, low=1, high=MAX_RESULTS)
        offset = params.integer("offset", 0, low=0, high=MAX_RESULTS - 1)
        if offset + top > MAX_RESULTS:
            raise ApiError(400, f"offset + top = {offset + top} is past the last result served", f"page within the first {MAX_RESULTS} results")
        options = dict(
            threshold=params.number("threshold", low=-1.0, high=1.0),
            add=[_term(t) for t in params.texts("add")],
            sub=[_term(t) for t in params.texts("sub")],
            ensemble=params.flag("ensemble", True),
            templates=params.texts("template") or None,
            include_query_images=params.flag("include_query_images", False),
            filters=_filters(params),
            literal=params.flag("literal", False),
            within=params.number("within", low=0.0, high=2.0),
            sort=params.text("sort") or "score",
        )
        best = params.integer("k", None, low=1, high=MAX_RESULTS)
        params.check_all_read()
        if options["sort"] == "score":
            # Pages of results by score are the first `offset + top` (one more says whether
            # there is a next page); `within` cuts from the best, which every page shares.
            fetch = top + offset + 1 if best is None else min(best, top + offset + 1)
        else:
            fetch = DEFAULT_SORTED if best is None else best  # the same set on every page
        upload = None
        if request.method == "POST":
            if words is not None or like is not None:
                raise ApiError(400, "a posted image is the query: q and like don't go with it", "send either the image or q/like")
            upload = _saved_upload(request)
            query, described = upload, "uploaded image"
        elif like is not None:
            if words is not None:
                raise ApiError(400, "q and like are two queries", "search for words (q) or for photos like one (like), not both")
            query, described = like, f"photo {like}"
        elif words is not None:
            query, described = words, words
        else:
            raise ApiError(400, "no query", "give q=words, like=PHOTO_ID, or POST an image")
        try:
            hits = self._search(query, fetch, options)
        finally:
            if upload is not None:
                _discard(upload)
        page = hits[offset : offset + top]
        parsed = hits.parsed
        return Response.json(
            {
                "schema": output.SCHEMA_VERSION,
                "query": described,
                "parsed": output.parsed_field(parsed),
                "note": parsed.note if parsed is not None else None,
                "offset": offset,
                "top": top,
                "more": len(hits) > offset + top,
                "results": [{**output.hit_record(hit, described, parsed), "id": hit.id} for hit in page],
            }
        )

    def _library_map(self, params: Params):
        """The map for these filters, made once per library generation (photosearch/map:
        the layout is also cached next to the library, so a restarted server has it too)."""
        filters = _filters(params)
        clusters = params.integer("clusters", None, low=1, high=1000)
        with self.lock:
            wanted = (self.library.generation(), filters, clusters)
            if self._map is None or self._map[0] != wanted:
                self._map = (wanted, self.library.map(filters, clusters=clusters))
            return self._map[1]

    def map(self, request: Request) -> Response:
        """The Map view's data: `photosearch map`'s layout and clusters, with photo ids."""
        _allow(request, "GET", "HEAD")
        params = Params(request.params)
        made = self._library_map(params)
        params.check_all_read()
        from photosearch.map.render_html import map_data

        return Response.json(map_data(made))

    def map_cluster(self, request: Request, number: str) -> Response:
        """One cluster's photos, nearest its centre first, a page at a time: what clicking
        a cluster on the map shows in the results."""
        _allow(request, "GET", "HEAD")
        params = Params(request.params)
        top = params.integer("top", DEFAULT_TOP, low=1, high=MAX_RESULTS)
        offset = params.integer("offset", 0, low=0, high=10_000_000)
        made = self._library_map(params)
        params.check_all_read()
        try:
            members = made.members(int(number))
        except UsageError as exc:
            raise ApiError(404, exc.message, exc.hint) from None
        cluster = made.clusters[int(number) - 1]
        page = [int(i) for i in members[offset : offset + top]]
        closeness = dict(zip(made.ids.tolist(), made.closeness.tolist(), strict=True)) if made.closeness is not None else {}
        records = [{**output.photo_record(made.photos[i]), "score": round(closeness.get(i, 0.0), 6)} for i in page if i in made.photos]
        return Response.json(
            {
                "schema": output.SCHEMA_VERSION,
                "cluster": cluster.cluster,
                "label": cluster.label,
                "label_score": round(cluster.label_score, 6),
                "size": cluster.size,
                "offset": offset,
                "top": top,
                "more": len(members) > offset + top,
                "results": records,
            }
        )

    def _search(self, query, k: int, options: dict) -> list:
        with self.lock:
            return self.library.search(query, k=k, text=True, **options)

    def duplicates(self, request: Request) -> Response:
        _allow(request, "GET", "HEAD")
        params = Params(request.params)
        threshold = params.number("threshold", low=-1.0, high=1.0)
        filters = _filters(params)
        params.check_all_read()
        with self.lock:
            groups = self.library.duplicates(0.97 if threshold is None else threshold, filters)
        records = []
        for group in groups:
            record = output.duplicate_group_record(group)
            for photo, member in zip(record["photos"], group.members, strict=True):
                photo["id"] = member.photo.id
            records.append(record)
        return Response.json({"schema": output.SCHEMA_VERSION, "groups": records})

    def info(self, request: Request) -> Response:
        _allow(request, "GET", "HEAD")
        Params(request.params).check_all_read()
        with self.lock:
            facts = self.library.info()
            generation = self.library.generation()
        return Response.json(
            {
                "schema": output.SCHEMA_VERSION,
                "library": str(facts.library),
                "photos": facts.photos,
                "model": facts.model,
                "pretrained": facts.pretrained,
                "generation": generation,
            }
        )

    def photo(self, request: Request, photo_id: str) -> Response:
        _allow(request, "GET", "HEAD")
        Params(request.params).check_all_read()
        with self.lock:
            photo = self.library.photo(int(photo_id))
        return Response.json(output.photo_record(photo))

    def thumbnail(self, request: Request, photo_id: str) -> Response:
        _allow(request, "GET", "HEAD")
        Params(request.params).check_all_read()
        from photosearch import thumbnails

        with self.lock:
            facts = self.library.file_facts(int(photo_id))
        path = thumbnails.thumbnail(facts)  # checks the photo is unchanged, even when cached
        tag = f'"{path.stem}"'
        if tag in _etags(request.headers.get("if-none-match", "")):
            return Response(304, "image/jpeg", headers={"ETag": tag, "Cache-Control": "private, no-cache"})
        return Response(200, "image/jpeg", path.read_bytes(), headers={"ETag": tag, "Cache-Control": "private, no-cache"})

    def original(self, request: Request, photo_id: str) -> Response:
        _allow(request, "GET", "HEAD")
        Params(request.params).check_all_read()
        with self.lock:
            facts = self.library.file_facts(int(photo_id))
        from photosearch import thumbnails

        fp = thumbnails.open_verified(facts)  # checked again on the opened file, outside the lock
        name = os.path.basename(os.fsdecode(facts.path))
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if not kind.startswith("image/") or kind == "image/svg+xml":
            kind = "application/octet-stream"
        quoted = urllib.parse.quote(name, safe="")
        return Response(
            200, kind, file=fp, length=facts.size,
            headers={"Content-Disposition": f"inline; filename*=UTF-8''{quoted}", "Cache-Control": "private, no-store"},
        )  # fmt: skip

def _allow(request: Request, *methods: str) -> None:
    if request.method not in methods:
        raise ApiError(405, f"{request.method} is not allowed here", f"use {' or '.join(methods)}")


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _as_api_error(exc: PhotosearchError) -> ApiError:
    from photosearch.thumbnails import PhotoChangedError, PhotoGoneError

    if isinstance(exc, PhotoGoneError):
        status = 410
    elif isinstance(exc, PhotoChangedError):
        status = 409
    elif isinstance(exc, NotFoundError):
        status = 404
    elif isinstance(exc, UsageError):
        status = 400
    else:
        status = 503  # the library can't answer now (missing model, unreadable): not the request's fault
    return ApiError(status, exc.message, exc.hint)


def _saved_upload(request: Request) -> Path:
    """A posted image, kept in a private temporary file while it is searched with."""
    body = request.body or b""
    if not body:
        raise ApiError(400, "the posted image is empty", "POST the image file's bytes as the request body")
    fd, name = tempfile.mkstemp(prefix="photosearch-query-", suffix=".img")
    with os.fdopen(fd, "wb") as f:
        f.write(body)
    return Path(name)


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
