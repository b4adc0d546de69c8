"""The library database (SQLite): the source of truth for every photo and its vector.

Layout (schema version 2):
  meta(key, value)      model name / pretrained / weights fingerprint, dim, generation,
                        vector_dtype ('float32', the default, or 'float16') ...
  photos(id, path, size, mtime_ns, width, height, taken_at, taken_at_source, indexed_at,
         embedding, fingerprint, vector_gen)
                        one row per indexed photo. `path` is the absolute path as raw bytes
                        (file names needn't be UTF-8). `embedding` is the L2-normalised
                        vector, `dim` little-endian values of the library's `vector_dtype`:
                        float32 (4·dim bytes) or float16 (2·dim bytes); readers go by the
                        blob's length, so a reader never misreads a vector whatever it read
                        from `meta` first. `fingerprint`: sha256 of size + first MiB + last
                        KiB, to recognise moved and copied photos. `vector_gen`: the
                        generation whose write last set this row's vector, so the search
                        index can catch up on just what changed. `crops`: how the photo was
                        cut for the model (model/cut.py CROPS; NULL: before there was a
                        choice, the centre square). `tiles`: for `--crops max`, the vectors of
                        the squares across a frame that isn't square, one after another in
                        the same dtype (NULL otherwise); `embedding` is then their mean.
  query_cache(key, vector, used_at)
                        text query vectors by sha256(model fingerprint, phrasings, text).
  failures(path, size, mtime_ns, reason, failed_at)
                        photos that could not be decoded; not retried until they change.

WAL mode, so readers never block the writer; every write is one `BEGIN IMMEDIATE`
transaction that also bumps `generation`, which the FAISS cache uses to know it is stale.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from photosearch.errors import BusyError, LibraryError, StorageError, UsageError

SCHEMA_VERSION = 3
# The search index of a `--crops max` library holds a vector a tile, under the entry id
# photo id * TILE_IDS + tile number (photos with one vector: tile 0). More than cut.MAX_TILES.
TILE_IDS = 16
QUERY_CACHE_SIZE = 5000
VECTOR_DTYPE = np.dtype("<f4")  # query cache vectors; photo vectors are VECTOR_DTYPES[meta]
VECTOR_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


@dataclass
class PhotoRow:
    path: bytes
    size: int
    mtime_ns: int
    width: int
    height: int
    taken_at: str
    taken_at_source: str  # 'exif' or 'mtime'
    embedding: np.ndarray
    fingerprint: str | None = None
    crops: str | None = None  # how it was cut (model/cut.py CROPS)
    tiles: np.ndarray | None = None  # (n, dim) for --crops max of a frame that isn't square


@dataclass
class PhotoInfo:
    id: int
    path: bytes
    size: int
    width: int | None
    height: int | None
    taken_at: str | None


_IN_CHUNK = 500  # values per `IN (...)`: well under SQLite's limit on bound parameters


def _chunks(values: list) -> Iterator[tuple[list, str]]:
    """`values` in slices, each with its `?,?,...` placeholders for an `IN (...)`."""
    for start in range(0, len(values), _IN_CHUNK):
        chunk = values[start : start + _IN_CHUNK]
        yield chunk, ",".join("?" * len(chunk))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _migrate_1(db) -> None:
    """The 0.1 schema."""
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["photos"].create(
        {
            "id": int,
            "path": bytes,
            "size": int,
            "mtime_ns": int,
            "width": int,
            "height": int,
            "taken_at": str,
            "taken_at_source": str,
            "indexed_at": str,
            "embedding": bytes,
            "fingerprint": str,
            "vector_gen": int,
        },
        pk="id",
        not_null={"path", "size", "mtime_ns", "embedding", "vector_gen"},
    )
    db["photos"].create_index(["path"], unique=True)
    db["photos"].create_index(["fingerprint"])
    db["failures"].create(
        {"path": bytes, "size": int, "mtime_ns": int, "reason": str, "failed_at": str},
        pk="path",
    )
    db["query_cache"].create({"key": str, "vector": bytes, "used_at": str}, pk="key")


def _migrate_2(db) -> None:
    """Whole-frame embeddings: how each photo was cut, and the vectors of its tiles."""
    db.execute("ALTER TABLE photos ADD COLUMN crops TEXT")
    db.execute("ALTER TABLE photos ADD COLUMN tiles BLOB")


def _migrate_3(db) -> None:
    """Which rows changed since the search index was saved, found without reading the table:
    a search index catching up asks for `vector_gen > saved generation`, and on a library of
    millions a scan of the photos table reads every stored vector (gigabytes). The index also
    lists every row id in a few bytes a row (photo_ids)."""
    db.execute("CREATE INDEX IF NOT EXISTS photos_vector_gen ON photos(vector_gen)")


# Numbered schema changes, applied in order inside one transaction; a library records the
# last one applied (PRAGMA user_version). Add a change as the next number, never edit one.
MIGRATIONS = {1: _migrate_1, 2: _migrate_2, 3: _migrate_3}


class Store:
    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, *, create: bool = False) -> "Store":
        if not path.exists():
            if not create:
                raise LibraryError(
                    f"no photo library at {path}",
                    "run `photosearch index FOLDER` first, or point --db / PHOTOSEARCH_DB at a library",
                )
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LibraryError(f"cannot create {path.parent}: {exc.strerror}", "choose another --db") from None
        try:
            store = cls(cls._connect(path), path)
            if create:
                store._migrate()
            else:
                store._check_schema()
        except sqlite3.OperationalError as exc:
            if create:
                raise storage_error(path, exc) from None
            try:  # a library on a read-only disk still answers queries
                store = cls(cls._connect(path, read_only=True), path)
                store._check_schema(migrate=False)
            except sqlite3.DatabaseError:
                raise LibraryError(f"cannot open library {path}: {exc}", "check its permissions") from None
        except sqlite3.DatabaseError as exc:
            raise LibraryError(f"cannot open library {path}: {exc}", "is it a photosearch library?") from None
        return store

    @staticmethod
    def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
        if read_only:
            # immutable: nobody can write a file on a read-only disk, so no locking is needed
            # (and a WAL library closed cleanly has no -shm file to open there).
            uri = "file:" + urllib.parse.quote(str(path)) + "?immutable=1"
            return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _check_schema(self, *, migrate: bool = True) -> None:
        version = self._schema_version()
        if version == 0:
            raise LibraryError(f"{self.path} is not a photosearch library", "check --db / PHOTOSEARCH_DB")
        if version > SCHEMA_VERSION:
            raise LibraryError(
                f"library {self.path} has schema {version}, newer than this photosearch ({SCHEMA_VERSION})",
                "upgrade photosearch",
            )
        if version < SCHEMA_VERSION and migrate:
            self._migrate()

    def _migrate(self) -> None:
        import sqlite_utils

        db = sqlite_utils.Database(self.conn)
        with self.transaction():
            version = self._schema_version()
            for number in sorted(MIGRATIONS):
                if number > version:
                    MIGRATIONS[number](db)
                    self.conn.execute(f"PRAGMA user_version = {number}")
            if version == 0:
                self._set_meta({"created_at": _now(), "generation": "0"})

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: all of it lands, or (killed, disk full, error) none of it."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise storage_error(self.path, exc) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG):
                raise storage_error(self.path, exc) from None
            raise

    # -- meta ------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta"))

    def _set_meta(self, values: dict[str, object]) -> None:
        self.conn.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, None if v is None else str(v)) for k, v in values.items()],
        )

    def set_meta(self, values: dict[str, object]) -> None:
        with self.transaction():
            self._set_meta(values)

    def generation(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def _bump_generation(self) -> None:
        self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    def _next_generation(self) -> int:
        """Inside a write transaction: the generation this write will end at."""
        return int(self.conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]) + 1

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads that see one version of the library, however many statements they take
        (a writer may commit in between; WAL keeps our snapshot until the end)."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    # -- vector precision ------------------------------------------------------------------
    def vector_dtype(self) -> str:
        """'float32' or 'float16': how this library stores photo vectors."""
        return self.meta().get("vector_dtype", "float32")

    def _stored_dtype(self) -> np.dtype:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'vector_dtype'").fetchone()
        return VECTOR_DTYPES[row[0] if row else "float32"]

    def set_vector_dtype(self, dtype: str) -> int:
        """Store photo vectors as `dtype` from now on, converting the stored ones in place
        (one transaction: killed half-way, nothing changed), then give the freed space back
        to the disk. Returns how many vectors were converted.

        float32 -> float16 rounds each value to 11 significant bits (cosines move by ~1e-4);
        converting back widens exactly, so the float16 rounding stays.
        """
        if dtype not in VECTOR_DTYPES:
            raise UsageError(f"unknown vector precision {dtype!r}", "use float32 or float16")
        target = VECTOR_DTYPES[dtype]
        dim = int(self.meta().get("dim", 0))

        source = self._stored_dtype()

        def convert(blob: bytes | None) -> bytes | None:  # an embedding, or a photo's tiles
            if blob is None:
                return None
            return decode_vectors(blob, len(blob) // (dim * source.itemsize), dim).astype(target).tobytes()

        self.conn.create_function("photosearch_convert_vector", 1, convert, deterministic=True)
        with self.transaction() as conn:
            if self._stored_dtype() == target:
                converted = 0
            else:
                converted = conn.execute(
                    "UPDATE photos SET embedding = photosearch_convert_vector(embedding),"
                    " tiles = photosearch_convert_vector(tiles), vector_gen = ?",
                    (self._next_generation(),),
                ).rowcount
                self._set_meta({"vector_dtype": dtype})
                self._bump_generation()
        if converted or self._free_fraction() > 0.25:
            self._reclaim_space()
        return converted

    def _free_fraction(self) -> float:
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        return free / pages if pages else 0.0

    def _reclaim_space(self) -> None:
        """VACUUM (atomic, like any transaction), then fold the WAL back into the file. If it
        fails (it needs about the library's size in free space), the conversion stands and
        the same command tries again."""
        try:
            self.conn.execute("VACUUM")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as exc:
            error = storage_error(self.path, exc)
            raise type(error)(
                f"the vectors are converted, but the space they freed could not be given back: {error.message}",
                "free some space and run the same command again",
            ) from None

    # -- photos ----------------------------------------------------------------------------
    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM photos").fetchone()[0]

    def known_files(self) -> dict[bytes, tuple[int, int]]:
        """path -> (size, mtime_ns) for every indexed photo."""
        return {p: (s, m) for p, s, m in self.conn.execute("SELECT path, size, mtime_ns FROM photos")}

    def known_failures(self) -> dict[bytes, tuple[int, int]]:
        return {p: (s, m) for p, s, m in self.conn.execute("SELECT path, size, mtime_ns FROM failures")}

    def failures(self) -> list[tuple[bytes, str, str]]:
        return list(self.conn.execute("SELECT path, reason, failed_at FROM failures ORDER BY path"))

    def write_batch(self, rows: Iterable[PhotoRow], failed: Iterable[tuple[bytes, int, int, str]]) -> None:
        """Insert or replace photos and record failures, in one transaction."""
        now = _now()
        rows = list(rows)
        failure_params = [(p, s, m, reason, now) for p, s, m, reason in failed]
        with self.transaction() as conn:
            dtype, generation = self._stored_dtype(), self._next_generation()
            photo_params = [
                (
                    r.path, r.size, r.mtime_ns, r.width, r.height, r.taken_at, r.taken_at_source, now,
                    np.ascontiguousarray(r.embedding, dtype=dtype).tobytes(), r.fingerprint, generation, r.crops,
                    None if r.tiles is None else np.ascontiguousarray(r.tiles, dtype=dtype).tobytes(),
                )
                for r in rows
            ]
            conn.executemany(
                """INSERT INTO photos(path, size, mtime_ns, width, height, taken_at, taken_at_source,
                                      indexed_at, embedding, fingerprint, vector_gen, crops, tiles)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(path) DO UPDATE SET
                     size = excluded.size, mtime_ns = excluded.mtime_ns, width = excluded.width,
                     height = excluded.height, taken_at = excluded.taken_at,
                     taken_at_source = excluded.taken_at_source, indexed_at = excluded.indexed_at,
                     embedding = excluded.embedding, fingerprint = excluded.fingerprint,
                     vector_gen = excluded.vector_gen, crops = excluded.crops, tiles = excluded.tiles""",
                photo_params,
            )
            conn.executemany("DELETE FROM failures WHERE path = ?", [(p[0],) for p in photo_params])
            conn.executemany(
                "INSERT OR REPLACE INTO failures(path, size, mtime_ns, reason, failed_at) VALUES (?, ?, ?, ?, ?)",
                failure_params,
            )
            conn.executemany("DELETE FROM photos WHERE path = ?", [(p[0],) for p in failure_params])
            if photo_params or failure_params:
                self._bump_generation()

    def rows_by_fingerprint(self, fingerprints: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        """fingerprint -> (row id, path) of an indexed photo with that content."""
        found: dict[str, tuple[int, bytes]] = {}
        for chunk, marks in _chunks(list(set(fingerprints))):
            for row_id, path, fp in self.conn.execute(
                f"SELECT id, path, fingerprint FROM photos WHERE fingerprint IN ({marks}) ORDER BY id", chunk
            ):
                found.setdefault(fp, (row_id, path))
        return found

    def reuse(self, moves: Iterable[tuple[int, bytes, int, int]], copies: Iterable[tuple[int, bytes, int, int]]) -> None:
        """Give known content a new path without re-encoding it, in one transaction.

        moves:  (row id, new path, size, mtime_ns) — the row's photo was moved or renamed
        copies: (row id, new path, size, mtime_ns) — a new row with that row's vector
        """
        moves, copies = list(moves), list(copies)
        if not moves and not copies:
            return
        now = _now()
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE photos SET path = ?, size = ?, mtime_ns = ?, indexed_at = ? WHERE id = ?",
                [(path, size, mtime, now, row_id) for row_id, path, size, mtime in moves],
            )
            generation = self._next_generation()
            conn.executemany(
                """INSERT INTO photos(path, size, mtime_ns, width, height, taken_at, taken_at_source,
                                      indexed_at, embedding, fingerprint, vector_gen, crops, tiles)
                   SELECT ?, ?, ?, width, height, taken_at, taken_at_source, ?, embedding, fingerprint, ?,
                          crops, tiles
                   FROM photos WHERE id = ?""",
                [(path, size, mtime, now, generation, row_id) for row_id, path, size, mtime in copies],
            )
            conn.executemany("DELETE FROM failures WHERE path = ?", [(c[1],) for c in moves + copies])
            self._bump_generation()

    def remove(self, paths: Iterable[bytes]) -> int:
        params = [(p,) for p in paths]
        if not params:
            return 0
        with self.transaction() as conn:
            before = conn.total_changes
            conn.executemany("DELETE FROM photos WHERE path = ?", params)
            removed = conn.total_changes - before
            conn.executemany("DELETE FROM failures WHERE path = ?", params)
            self._bump_generation()
        return removed

    def cached_query(self, key: str) -> np.ndarray | None:
        row = self.conn.execute("SELECT vector FROM query_cache WHERE key = ?", (key,)).fetchone()
        return np.frombuffer(row[0], dtype=VECTOR_DTYPE).astype(np.float32) if row else None

    def cache_query(self, key: str, vector: np.ndarray) -> None:
        """Best effort: a library we can't write (read-only, busy) just doesn't cache."""
        try:
            with self.transaction() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO query_cache(key, vector, used_at) VALUES (?, ?, ?)",
                    (key, np.ascontiguousarray(vector, dtype=VECTOR_DTYPE).tobytes(), _now()),
                )
                conn.execute(
                    "DELETE FROM query_cache WHERE key NOT IN (SELECT key FROM query_cache ORDER BY used_at DESC LIMIT ?)",
                    (QUERY_CACHE_SIZE,),
                )
        except (StorageError, BusyError, sqlite3.Error):
            pass

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64, vectors float32 (n, dim)) for every photo, in id order."""
        return self._vectors("SELECT id, embedding FROM photos ORDER BY id", ())

    def iter_vectors(self, chunk: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`all_vectors` a chunk at a time (ids ascending), so a million of them needn't be
        in memory twice over; call inside `snapshot()` for one consistent version."""
        last = -(2**63)
        while True:
            ids, matrix = self._vectors("SELECT id, embedding FROM photos WHERE id > ? ORDER BY id LIMIT ?", (last, chunk))
            if len(ids) == 0:
                return
            yield ids, matrix
            last = int(ids[-1])

    def vectors_written_after(self, generation: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float32 vectors) of the rows whose vector was written after `generation`."""
        return self.vectors_by_id(self._ids_written_after(generation))

    def _ids_written_after(self, generation: int) -> np.ndarray:
        # Read from the index photos_vector_gen alone (it holds the row ids), then fetch the
        # rows by id: a few pages for a small update, where a scan reads the whole table.
        return self._row_ids("WHERE vector_gen > ?", (generation,))

    def _row_ids(self, where: str = "", params: tuple = ()) -> np.ndarray:
        try:
            rows = self.conn.execute(f"SELECT id FROM photos INDEXED BY photos_vector_gen {where}", params)
        except sqlite3.OperationalError:  # a read-only library of schema 2: no such index
            rows = self.conn.execute(f"SELECT id FROM photos {where}", params)
        return np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64))

    def vectors_by_id(self, ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float32 vectors) of those of these row ids that exist, ascending."""
        wanted = sorted({int(i) for i in ids})
        dim = int(self.meta().get("dim", 0))
        parts = [(np.zeros(0, np.int64), np.zeros((0, dim), np.float32))]
        for chunk, marks in _chunks(wanted):
            parts.append(self._vectors(f"SELECT id, embedding FROM photos WHERE id IN ({marks}) ORDER BY id", tuple(chunk)))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def photo_ids(self) -> np.ndarray:
        """Every photo's row id, ascending."""
        return self._row_ids()  # from the small index, not the table (whose pages hold the vectors)

    # -- what the search indexes hold --------------------------------------------------------
    # A vector a photo, under its row id; and, in a `--crops max` library, a second index of
    # a vector a tile (`tiles`, or the photo's own vector as tile 0), under photo id *
    # TILE_IDS + tile (vectors.py). `tiles` says which.
    def holds_tiles(self) -> bool:
        return self.meta().get("crops") == "max"

    def entry_count(self, tiles: bool) -> int:
        if not tiles:
            return self.count()
        return int(self.conn.execute(
            "SELECT coalesce(sum(CASE WHEN tiles IS NULL THEN 1 ELSE length(tiles) / length(embedding) END), 0) FROM photos"
        ).fetchone()[0])

    def entries(self, where: str = "", params: tuple = (), *, tiles: bool) -> tuple[np.ndarray, np.ndarray]:
        """(entry ids ascending, float32 vectors) of the photos `where` selects (an SQL
        clause on `photos`, or all)."""
        if not tiles:
            return self._vectors(f"SELECT id, embedding FROM photos {where} ORDER BY id", params)
        dim = int(self.meta().get("dim", 0))
        ids: list[np.ndarray] = [np.zeros(0, np.int64)]
        blobs: list[bytes] = []
        for row_id, embedding, tiles in self.conn.execute(f"SELECT id, embedding, tiles FROM photos {where} ORDER BY id", params):
            n = 1 if tiles is None else len(tiles) // len(embedding)
            ids.append(row_id * TILE_IDS + np.arange(n, dtype=np.int64))
            blobs.append(embedding if tiles is None else tiles)
        entry_ids = np.concatenate(ids)
        return entry_ids, decode_vectors(blobs, len(entry_ids), dim)

    def iter_entries(self, tiles: bool, chunk: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`entries()` about `chunk` photos at a time; inside `snapshot()` for one version."""
        last = -(2**63)
        while True:
            found = self.conn.execute("SELECT id FROM photos WHERE id > ? ORDER BY id LIMIT 1 OFFSET ?", (last, chunk - 1)).fetchone()
            if found is None:
                part = self.entries("WHERE id > ?", (last,), tiles=tiles)
                if len(part[0]):
                    yield part
                return
            yield self.entries("WHERE id > ? AND id <= ?", (last, found[0]), tiles=tiles)
            last = int(found[0])

    def entry_ids(self, tiles: bool) -> np.ndarray:
        """Every entry id the index should hold, ascending."""
        if not tiles:
            return self.photo_ids()
        rows = self.conn.execute("SELECT id, CASE WHEN tiles IS NULL THEN 1 ELSE length(tiles) / length(embedding) END FROM photos ORDER BY id")
        parts = [row_id * TILE_IDS + np.arange(n, dtype=np.int64) for row_id, n in rows]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def entries_written_after(self, generation: int, tiles: bool) -> tuple[np.ndarray, np.ndarray]:
        if not tiles:
            return self.vectors_written_after(generation)
        return self.entries_by_id(self._ids_written_after(generation) * TILE_IDS, tiles=True)

    def entries_by_id(self, ids: Iterable[int], tiles: bool) -> tuple[np.ndarray, np.ndarray]:
        """The entries of the photos these entry ids belong to, ascending."""
        per = TILE_IDS if tiles else 1
        wanted = sorted({int(i) // per for i in ids})
        dim = int(self.meta().get("dim", 0))
        parts = [(np.zeros(0, np.int64), np.zeros((0, dim), np.float32))]
        for chunk, marks in _chunks(wanted):
            parts.append(self.entries(f"WHERE id IN ({marks})", tuple(chunk), tiles=tiles))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def tiles_of(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """photo id -> its tiles' vectors (n, dim), for those of `ids` that have tiles."""
        dim = int(self.meta().get("dim", 0))
        found: dict[int, np.ndarray] = {}
        for chunk, marks in _chunks(sorted({int(i) for i in ids})):
            for row_id, embedding, tiles in self.conn.execute(
                f"SELECT id, embedding, tiles FROM photos WHERE tiles IS NOT NULL AND id IN ({marks})", chunk
            ):
                found[row_id] = decode_vectors(tiles, len(tiles) // len(embedding), dim)
        return found

    def cut_otherwise(self, crops: str, slack: float) -> set[bytes]:
        """Paths of the photos cut other than `crops` says whose frame is more than `slack`
        from square (a square one is cut the same every way: model/cut.py)."""
        return {
            path
            for (path,) in self.conn.execute(
                """SELECT path FROM photos WHERE coalesce(crops, 'centre') != ?
                   AND (width IS NULL OR height IS NULL OR max(width, height) > min(width, height) * ?)""",
                (crops, 1 + slack),
            )
        }

    def set_crops(self, crops: str) -> None:
        """Record how the library cuts photos from now on; whether it keeps an index of
        tiles changes with it (`holds_tiles`), so this is a new generation."""
        with self.transaction():
            if self.meta().get("crops") != crops:
                self._set_meta({"crops": crops})
                self._bump_generation()

    def _vectors(self, sql: str, params: tuple) -> tuple[np.ndarray, np.ndarray]:
        dim = int(self.meta().get("dim", 0))
        ids, blobs = [], []
        for row_id, blob in self.conn.execute(sql, params):
            ids.append(row_id)
            blobs.append(blob)
        return np.asarray(ids, dtype=np.int64), decode_vectors(blobs, len(ids), dim)

    def vector_from_blob(self, blob: bytes) -> np.ndarray:
        """One stored `embedding` as a float32 vector, whatever the library's precision."""
        return decode_vectors(blob, 1, int(self.meta().get("dim", 0)))[0]

    def iter_photos(self, only: np.ndarray | None = None, chunk: int = 2048) -> Iterator[tuple[list[PhotoInfo], np.ndarray]]:
        """(photos, their vectors as an (n, dim) float32 matrix), in path order, chunk by
        chunk; `only`: just these row ids. Call inside `snapshot()` for one version."""
        dim = int(self.meta().get("dim", 0))
        ids = [row[0] for row in self.conn.execute("SELECT id FROM photos ORDER BY path")]
        if only is not None:
            wanted = {int(i) for i in only}
            ids = [i for i in ids if i in wanted]
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            rows: dict[int, tuple] = {}
            for sub, marks in _chunks(part):
                for r in self.conn.execute(f"SELECT {_INFO_COLUMNS}, embedding FROM photos WHERE id IN ({marks})", sub):
                    rows[r[0]] = r
            present = [rows[i] for i in part if i in rows]
            infos = [PhotoInfo(*r[:-1]) for r in present]
            yield infos, decode_vectors([r[-1] for r in present], len(present), dim)

    def photos_by_id(self, ids: Iterable[int]) -> dict[int, PhotoInfo]:
        found: dict[int, PhotoInfo] = {}
        for chunk, marks in _chunks([int(i) for i in ids]):
            for row in self.conn.execute(f"SELECT {_INFO_COLUMNS} FROM photos WHERE id IN ({marks})", chunk):
                found[row[0]] = PhotoInfo(*row)
        return found

    def file_facts(self, photo_id: int) -> tuple[bytes, int, int, str | None] | None:
        """(path, size, mtime_ns, fingerprint) recorded for the photo, or None."""
        return self.conn.execute("SELECT path, size, mtime_ns, fingerprint FROM photos WHERE id = ?", (int(photo_id),)).fetchone()

    def all_file_facts(self) -> Iterator[tuple[int, bytes, int, int, str | None]]:
        """(id, path, size, mtime_ns, fingerprint) of every photo, as `file_facts` gives one."""
        return iter(self.conn.execute("SELECT id, path, size, mtime_ns, fingerprint FROM photos").fetchall())

    def photo_by_path(self, path: bytes) -> PhotoInfo | None:
        row = self.conn.execute(f"SELECT {_INFO_COLUMNS} FROM photos WHERE path = ?", (path,)).fetchone()
        return PhotoInfo(*row) if row else None

    def stored_vector(self, path: bytes) -> tuple[PhotoInfo, int, np.ndarray] | None:
        """(photo, mtime_ns, vector) of the indexed photo at `path`, or None: whether it
        is unchanged since is for the caller to say (size and mtime_ns against the file)."""
        row = self.conn.execute(f"SELECT {_INFO_COLUMNS}, mtime_ns, embedding FROM photos WHERE path = ?", (path,)).fetchone()
        if row is None:
            return None
        return PhotoInfo(*row[:-2]), row[-2], self.vector_from_blob(row[-1])

    def vector_of(self, row_id: int) -> np.ndarray | None:
        row = self.conn.execute("SELECT embedding FROM photos WHERE id = ?", (int(row_id),)).fetchone()
        return self.vector_from_blob(row[0]) if row else None

    def vectors_for_paths(self, paths: Iterable[bytes]) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        """(ids, float32 vectors, paths) of those of `paths` that are indexed, in id order."""
        found: list[tuple[int, bytes, bytes]] = []
        for chunk, marks in _chunks(list(set(paths))):
            found += self.conn.execute(f"SELECT id, path, embedding FROM photos WHERE path IN ({marks})", chunk).fetchall()
        found.sort()
        dim = int(self.meta().get("dim", 0))
        return (
            np.asarray([r[0] for r in found], dtype=np.int64),
            decode_vectors([r[2] for r in found], len(found), dim),
            [r[1] for r in found],
        )

    def ids_matching(
        self,
        *,
        under: Sequence[bytes] = (),
        since: str | None = None,
        until: str | None = None,
        min_width: int | None = None,
        min_height: int | None = None,
    ) -> Iterator[tuple[int, bytes]]:
        """(id, path) of the photos under any of the folders `under` (absolute, as bytes),
        taken at or after `since` and before `until` (ISO 8601), at least that large."""
        where, params = [], []
        if under:
            ors = []
            for folder in under:
                prefix = folder.rstrip(b"/") + b"/"
                # Byte-wise range: every path that starts with `prefix` sorts in [prefix, prefix+1).
                ors.append("(path >= ? AND path < ?)")
                params += [prefix, prefix[:-1] + b"0"]  # '0' is the byte after '/'
            where.append("(" + " OR ".join(ors) + ")")
        for clause, value in (("taken_at >= ?", since), ("taken_at < ?", until), ("width >= ?", min_width), ("height >= ?", min_height)):
            if value:
                where.append(clause)
                params.append(value)
        sql = "SELECT id, path FROM photos" + (" WHERE " + " AND ".join(where) if where else "")
        yield from self.conn.execute(sql, params)

    # -- the search index's manifest ---------------------------------------------------------
    def index_manifest(self, prefix: str = "index_") -> dict[str, str]:
        """What a search index file holds, as recorded when it was written (vectors.py)."""
        return {k: v for k, v in self.meta().items() if k.startswith(prefix)}

    def record_index(self, generation: int, manifest: dict[str, object], swap: Callable[[], None], prefix: str = "index_") -> bool:
        """Put a new index file in place (`swap`) and record its `manifest`, in one write
        transaction, if the library is still at `generation`: holding SQLite's write lock
        while the file is swapped keeps file and manifest in step with any other process
        doing the same. False (and nothing swapped) when the library has moved on."""
        with self.transaction() as conn:
            current = int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
            if current != generation:
                return False
            swap()
            self._set_meta({f"{prefix}generation": generation, **{f"{prefix}{k}": v for k, v in manifest.items()}})
        return True


_INFO_COLUMNS = "id, path, size, width, height, taken_at"


def decode_vectors(blobs: bytes | list[bytes], n: int, dim: int) -> np.ndarray:
    """`n` stored vectors (one blob, or a list of blobs) as an (n, dim) float32 matrix. The
    byte count says float32 or float16; a mix (never inside one snapshot, as conversion is
    one transaction) is decoded blob by blob."""
    joined = blobs if isinstance(blobs, bytes) else b"".join(blobs)
    for dtype in VECTOR_DTYPES.values():
        if len(joined) == n * dim * dtype.itemsize:
            return np.frombuffer(joined, dtype=dtype).reshape(n, dim).astype(np.float32)
    if isinstance(blobs, bytes) or n == 0:
        raise LibraryError(f"a stored vector has {len(joined)} bytes, not {dim} values", "is the library damaged?")
    return np.concatenate([decode_vectors(b, 1, dim) for b in blobs]) if blobs else np.zeros((0, dim), np.float32)


def storage_error(path: Path, exc: BaseException) -> Exception:
    text = str(exc).lower() if not isinstance(exc, OSError) else (exc.strerror or str(exc)).lower()
    if "full" in text or "no space" in text or getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StorageError(
            f"cannot write the library {path}: the disk is full; nothing indexed so far was lost",
            "free some space (or move the library with --db) and run again to finish",
        )
    if "readonly" in text or "read-only" in text or getattr(exc, "errno", None) in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StorageError(
            f"cannot write the library {path}: it is read-only",
            "queries still work; to index, make it writable or use --db PATH elsewhere",
        )
    if "locked" in text or "busy" in text:
        return BusyError(f"the library {path} is locked by another process", "try again, or pass --wait")
    return StorageError(f"cannot write the library {path}: {exc}", "check the disk and permissions")


class WriterLock:
    """One writer per library: an flock on `<library>.lock`, released by the kernel if we die."""

    def __init__(self, library: Path, *, wait: bool = False):
        self.lock_path = Path(str(library) + ".lock")
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> "WriterLock":
        import fcntl

        library = Path(str(self.lock_path)[: -len(".lock")])
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise storage_error(library, exc) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(self._fd)
            self._fd = None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise BusyError(
                    f"another photosearch process is writing to {library}",
                    "wait for it to finish, or pass --wait",
                ) from None
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
