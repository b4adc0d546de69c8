"""`photosearch serve`: a local web gallery over a Library, with a JSON API under it.

api.py      the endpoints: requests in, Library calls, JSON and images out (no sockets)
server.py   HTTP: the standard library's threading server, Host and token checks
static/     the page: one HTML file, its script and its styles; nothing from a CDN

The API is documented in docs/web.md.
"""

from __future__ import annotations

from photosearch.web.api import Gallery
from photosearch.web.server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    GalleryServer,
    needs_token,
    serve_forever,
)

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Gallery", "GalleryServer", "needs_token", "serve_forever"]
