"""Renderers for results: JSON Lines, paths (newline or NUL separated), a Rich table.

JSON never goes through Rich (it may style it): it is `json.dumps` to stdout, one object a
line, flushed per line so a pipeline sees results as they come.

JSON Lines schema (version 1; fields are only ever added, never renamed or removed, and a
change of meaning bumps `schema`, which every line carries as its first key):
  schema      1
  query       the query this result answers (text, or the image's path; with --add/--sub
              terms, the main query)
  rank        1-based position
  score       cosine similarity between the query and the photo, -1..1 (6 decimals)
  path        absolute path (if the name isn't valid UTF-8, undecodable bytes become U+FFFD
              and `path_bytes` holds the exact name, base64)
  width, height   pixels, upright
  size_bytes  file size
  taken_at    capture time, ISO 8601 local time: EXIF DateTimeOriginal, else file mtime
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterable

from photosearch.query import Result

SCHEMA_VERSION = 1


def display_path(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def path_fields(raw: bytes) -> dict:
    """`path`, plus `path_bytes` (base64) when the name isn't valid UTF-8."""
    fields = {"path": display_path(raw)}
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        fields["path_bytes"] = base64.b64encode(raw).decode("ascii")
    return fields


def result_record(result: Result, query: str) -> dict:
    photo = result.photo
    record: dict = {
        "schema": SCHEMA_VERSION,
        "query": query,
        "rank": result.rank,
        "score": round(result.score, 6),
        **path_fields(photo.path),
    }
    record.update(
        width=photo.width,
        height=photo.height,
        size_bytes=photo.size,
        taken_at=photo.taken_at,
    )
    return record


def write_json_lines(results: Iterable[Result], query: str) -> None:
    for result in results:
        write_json(result_record(result, query))


def write_json(record: dict) -> None:
    sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def write_paths(results: Iterable[Result], *, nul: bool = False) -> None:
    """Exact path bytes, so `xargs -0` gets names that aren't UTF-8 right too."""
    sys.stdout.flush()
    out = sys.stdout.buffer
    end = b"\0" if nul else b"\n"
    for result in results:
        out.write(result.photo.path + end)
        out.flush()


def write_table(results: list[Result], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right", style="dim")
    table.add_column("score", justify="right")
    table.add_column("path", overflow="fold")
    table.add_column("size", justify="right", style="dim")
    table.add_column("taken", style="dim")
    for r in results:
        p = r.photo
        dims = f"{p.width}×{p.height}" if p.width and p.height else ""
        table.add_row(str(r.rank), f"{r.score:.3f}", display_path(p.path), dims, p.taken_at or "")
    Console().print(table)
