"""Every way a command lists photos: JSON Lines, a table, paths (newline or NUL), CSV.

Each command that lists photos (query, classify, duplicates, failures) offers the same five
formats through the same flags; a format is chosen once (`choose`) and a `Writer` renders
what the Library returned. Every JSON line is built here, nowhere else.

JSON never goes through Rich (it may style it): it is `json.dumps` to stdout, one object a
line, flushed per line so a pipeline sees results as they come. Paths and NUL-separated
paths are the exact bytes of the file name, so `xargs -0` gets names that aren't UTF-8
right. CSV and tables show such names with U+FFFD for the undecodable bytes.

JSON Lines schemas (version 1; fields are only ever added, never renamed or removed, and a
change of meaning bumps `schema`, which every line carries as its first key). Every photo's
`path` is absolute; if the name isn't valid UTF-8, undecodable bytes become U+FFFD and
`path_bytes` (only then) holds the exact name, base64.

  query       schema, query (the text, or the image's path, this line answers as given),
              parsed (how its words were searched once negations were read: {text: the
              words searched for, sub: [negated phrases, subtracted like --sub]}; null
              when the query was searched as given: no negation, --literal, an image),
              rank (1-based by score, whatever --sort), score (cosine, -1..1, 6 decimals),
              path, [path_bytes], width, height (pixels, upright), size_bytes, taken_at
              (ISO 8601 local time: EXIF DateTimeOriginal, else the file's mtime)
  classify    schema, path, [path_bytes], label, probability, labels: [{label, probability}]
              (the top -k labels, most probable first)
  duplicates  schema, group (1-based, biggest first), size, photos: [{path, [path_bytes],
              similarity (cosine to the group's first photo), width, height, size_bytes}]
  failures    schema, path, [path_bytes], reason, failed_at
  map         schema, cluster (1-based, biggest first), size, label, label_score (zero-shot
              probability of the label for the cluster's centre, 0..1), labels: [{label,
              probability}] (the best 3), examples: [{path, [path_bytes]}] (the photos
              nearest the cluster's centre, nearest first), x, y (the label's place on the
              map, -1..1)
"""

from __future__ import annotations

import base64
import csv
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from photosearch.errors import UsageError

SCHEMA_VERSION = 1
FORMATS = ("json", "table", "paths", "print0", "csv")


def choose(*, json: bool = False, table: bool = False, paths: bool = False, print0: bool = False, csv: bool = False) -> str:
    """The one format the flags ask for; none: a table on a terminal, JSON Lines in a pipe."""
    asked = [name for name, on in zip(FORMATS, (json, table, paths, print0, csv), strict=True) if on]
    if len(asked) > 1:
        raise UsageError(f"--{asked[0]} and --{asked[1]} exclude each other", "pick one output format")
    if asked:
        return asked[0]
    return "table" if sys.stdout.isatty() else "json"


def display_path(path: Path | bytes) -> str:
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    return raw.decode("utf-8", "replace")


def path_fields(path: Path | bytes) -> dict:
    """`path`, plus `path_bytes` (base64) when the name isn't valid UTF-8."""
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    fields: dict = {"path": raw.decode("utf-8", "replace")}
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        fields["path_bytes"] = base64.b64encode(raw).decode("ascii")
    return fields


# -- what each command's items look like in each format ------------------------------------


@dataclass(frozen=True)
class Answering:
    """The query a listing of hits answers: as a person reads it, and how its words were
    read (a ParsedQuery, or None for an image)."""

    query: str
    parsed: Any = None


def _answering(context) -> Answering:
    return context if isinstance(context, Answering) else Answering(context)


def parsed_field(parsed) -> dict | None:
    """`parsed` of a query line: the words searched for and the negated ones subtracted,
    or null when the query was searched as given."""
    if parsed is None or not parsed.changed:
        return None
    return {"text": parsed.positive, "sub": list(parsed.negated)}


def hit_record(hit, query: str, parsed=None) -> dict:
    return {
        "schema": SCHEMA_VERSION,
        "query": query,
        "parsed": parsed_field(parsed),
        "rank": hit.rank,
        "score": round(hit.score, 6),
        **path_fields(hit.path),
        "width": hit.width,
        "height": hit.height,
        "size_bytes": hit.size_bytes,
        "taken_at": hit.taken_at,
    }


def photo_record(photo) -> dict:
    """One photo of the library (the web API's /api/photos/{id})."""
    return {
        "schema": SCHEMA_VERSION,
        "id": photo.id,
        **path_fields(photo.path),
        "name": display_path(photo.path.name),
        "folder": display_path(photo.path.parent),
        "width": photo.width,
        "height": photo.height,
        "size_bytes": photo.size_bytes,
        "taken_at": photo.taken_at,
    }


def classification_record(item) -> dict:
    return {
        "schema": SCHEMA_VERSION,
        **path_fields(item.path),
        "label": item.label,
        "probability": round(item.probability, 6),
        "labels": [{"label": s.label, "probability": round(s.probability, 6)} for s in item.labels],
    }


def duplicate_group_record(group) -> dict:
    return {
        "schema": SCHEMA_VERSION,
        "group": group.group,
        "size": group.size,
        "photos": [
            {
                **path_fields(m.photo.path),
                "similarity": round(m.similarity, 6),
                "width": m.photo.width,
                "height": m.photo.height,
                "size_bytes": m.photo.size_bytes,
            }
            for m in group.members
        ],
    }


def failure_record(failure) -> dict:
    return {"schema": SCHEMA_VERSION, **path_fields(failure.path), "reason": failure.reason, "failed_at": failure.failed_at}


def map_cluster_record(cluster) -> dict:
    """One cluster of `photosearch map` (photosearch.map.MapCluster)."""
    return {
        "schema": SCHEMA_VERSION,
        "cluster": cluster.cluster,
        "size": cluster.size,
        "label": cluster.label,
        "label_score": round(cluster.label_score, 6),
        "labels": [{"label": name, "probability": round(p, 6)} for name, p in cluster.labels],
        "examples": [path_fields(photo.path) for photo in cluster.examples],
        "x": round(cluster.position[0], 4),
        "y": round(cluster.position[1], 4),
    }


def _dims(width, height) -> str:
    return f"{width}×{height}" if width and height else ""


@dataclass(frozen=True)
class Kind:
    """How one command's items render: as a JSON object, as rows (CSV and table share
    them), and as the paths they list (one item may list several: a duplicate group)."""

    record: Callable[[Any, str], dict]
    csv_header: tuple[str, ...]
    csv_rows: Callable[[Any, str], list[tuple]]
    table_columns: tuple[tuple[str, dict], ...]
    table_rows: Callable[[Any], list[tuple]]
    paths: Callable[[Any], list[Path]]
    nothing: str  # said on stderr when a table would be empty


HITS = Kind(
    record=lambda h, q: hit_record(h, _answering(q).query, _answering(q).parsed),
    csv_header=("query", "rank", "score", "path", "width", "height", "size_bytes", "taken_at"),
    csv_rows=lambda h, q: [(_answering(q).query, h.rank, f"{h.score:.6f}", display_path(h.path), h.width, h.height, h.size_bytes, h.taken_at)],
    table_columns=(("#", {"justify": "right", "style": "dim"}), ("score", {"justify": "right"}), ("path", {"overflow": "fold"}),
                   ("size", {"justify": "right", "style": "dim"}), ("taken", {"style": "dim"})),
    table_rows=lambda h: [(str(h.rank), f"{h.score:.3f}", display_path(h.path), _dims(h.width, h.height), h.taken_at or "")],
    paths=lambda h: [h.path],
    nothing="No photos matched {title!r}.",
)  # fmt: skip

CLASSIFICATIONS = Kind(
    record=lambda c, _: classification_record(c),
    csv_header=("path", "label", "probability", "labels"),
    csv_rows=lambda c, _: [(display_path(c.path), c.label, f"{c.probability:.6f}", ";".join(f"{s.label}:{s.probability:.6f}" for s in c.labels))],
    table_columns=(("path", {"overflow": "fold"}), ("label", {}), ("probability", {"justify": "right"})),
    table_rows=lambda c: [(display_path(c.path), c.label, f"{c.probability:.3f}")],
    paths=lambda c: [c.path],
    nothing="No photos to tag.",
)  # fmt: skip

DUPLICATES = Kind(
    record=lambda g, _: duplicate_group_record(g),
    csv_header=("group", "similarity", "path", "width", "height", "size_bytes"),
    csv_rows=lambda g, _: [(g.group, f"{m.similarity:.6f}", display_path(m.photo.path), m.photo.width, m.photo.height, m.photo.size_bytes) for m in g.members],
    table_columns=(("group", {"justify": "right"}), ("similarity", {"justify": "right"}), ("path", {"overflow": "fold"}), ("size", {"justify": "right", "style": "dim"})),
    table_rows=lambda g: [(str(g.group) if i == 0 else "", f"{m.similarity:.3f}", display_path(m.photo.path), _dims(m.photo.width, m.photo.height))
                          for i, m in enumerate(g.members)],
    paths=lambda g: [m.photo.path for m in g.members],
    nothing="No near-duplicate photos.",
)  # fmt: skip

FAILURES = Kind(
    record=lambda f, _: failure_record(f),
    csv_header=("path", "reason", "failed_at"),
    csv_rows=lambda f, _: [(display_path(f.path), f.reason, f.failed_at)],
    table_columns=(("path", {"overflow": "fold"}), ("reason", {}), ("failed at", {"style": "dim"})),
    table_rows=lambda f: [(display_path(f.path), f.reason, f.failed_at)],
    paths=lambda f: [f.path],
    nothing="No failures: every photo found was indexed.",
)  # fmt: skip


MAP_CLUSTERS = Kind(
    record=lambda c, _: map_cluster_record(c),
    csv_header=("cluster", "size", "label", "label_score", "examples"),
    csv_rows=lambda c, _: [(c.cluster, c.size, c.label, f"{c.label_score:.6f}", ";".join(display_path(p.path) for p in c.examples))],
    table_columns=(("cluster", {"justify": "right"}), ("size", {"justify": "right"}), ("label", {}), ("score", {"justify": "right"}),
                   ("nearest its centre", {"overflow": "fold", "style": "dim"})),
    table_rows=lambda c: [(str(c.cluster), str(c.size), c.label, f"{c.label_score:.3f}", display_path(c.examples[0].path) if c.examples else "")],
    paths=lambda c: [p.path for p in c.examples],
    nothing="No photos to map.",
)  # fmt: skip


class Writer:
    """Renders one command's items in one format. Everything but a table streams: written
    and flushed item by item. A table is printed on `close` (or on `end_table`, which ends
    one table and starts the next: one per query of a batch). `grouped` separates each
    item's paths from the next item's by an empty line (NUL with --print0)."""

    def __init__(self, fmt: str, kind: Kind, *, grouped: bool = False):
        self.fmt, self.kind, self.grouped = fmt, kind, grouped
        self._csv = None
        self._rows: list[tuple] = []

    def write(self, item, context: str = "") -> None:
        if self.fmt == "json":
            sys.stdout.write(json.dumps(self.kind.record(item, context), ensure_ascii=False) + "\n")
            sys.stdout.flush()
        elif self.fmt in ("paths", "print0"):
            end = b"\0" if self.fmt == "print0" else b"\n"
            sys.stdout.flush()
            out = sys.stdout.buffer
            out.write(b"".join(os.fsencode(p) + end for p in self.kind.paths(item)) + (end if self.grouped else b""))
            out.flush()
        elif self.fmt == "csv":
            if self._csv is None:
                self._csv = csv.writer(sys.stdout, lineterminator="\n")
                self._csv.writerow(self.kind.csv_header)
            self._csv.writerows(self.kind.csv_rows(item, context))
            sys.stdout.flush()
        else:
            self._rows += self.kind.table_rows(item)

    def write_all(self, items: Iterable, context: str = "") -> None:
        for item in items:
            self.write(item, context)

    def end_table(self, title: str | None = None) -> None:
        if self.fmt != "table":
            return
        rows, self._rows = self._rows, []
        if not rows:
            sys.stderr.write(self.kind.nothing.format(title=title) + "\n")
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for name, style in self.kind.table_columns:
            table.add_column(name, **style)
        for row in rows:
            table.add_row(*row)
        Console().print(table)

    def close(self, title: str | None = None) -> None:
        self.end_table(title)
