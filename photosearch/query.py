"""Turn a query into a vector and rank the library's photos against it.

A query is one or more weighted terms. A term is text, or an image when it names a file
that exists (`--text` forces text). Text terms are prompt-ensembled; image terms reuse the
library's stored vector when the image is indexed and unchanged (no model needed), else are
encoded. The combined vector, Σ weight·term, is re-normalised before ranking.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from photosearch.errors import DecodeError, UsageError
from photosearch.store import PhotoInfo, Store

# Prompt ensembling: the query is embedded in several phrasings and the unit vectors are
# averaged (then re-normalised). The raw query is one member, so a query that is already a
# sentence keeps its own voice. Phrasings follow the CLIP paper's ImageNet templates that
# fit photos; docs/design.md "Prompt ensembling" has the measurements behind the default.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a photo of {}.",
    "a good photo of {}.",
    "a close-up photo of {}.",
    "a cropped photo of {}.",
    "a bright photo of {}.",
    "a blurry photo of {}.",
)

_WEIGHT = re.compile(r"^([0-9]*\.?[0-9]+):(.+)$", re.DOTALL)


@dataclass
class Result:
    rank: int
    score: float
    photo: PhotoInfo


@dataclass(frozen=True)
class Term:
    text: str | None = None
    image: bytes | None = None  # absolute path of an image file
    photo_id: int | None = None  # a photo in the library, by row id
    weight: float = 1.0  # negative: subtract

    def describe(self) -> str:
        if self.photo_id is not None:
            return f"photo {self.photo_id}"
        return self.text if self.text is not None else os.fsdecode(self.image or b"")


def templates_for(templates: Sequence[str] | None, ensemble: bool) -> list[str] | None:
    """The phrasings a text term is embedded in: `templates` if given, else the default
    ensemble, or none (the text alone) with `ensemble` off."""
    for t in templates or []:
        if "{}" not in t:
            raise UsageError(f"template {t!r} has no {{}} for the query", 'write it like "a photo of {}."')
    if templates:
        return list(templates)
    return list(DEFAULT_TEMPLATES) if ensemble else None


def parse_term(raw, *, sign: float = 1.0, force_text: bool = False) -> Term:
    """`red`, `2:red`, `./cat.jpg`, `0.5:./cat.jpg` → a Term. A leading `W:` is a weight
    unless the whole string names an existing file. A path object is always an image, an
    int (or anything with an `id`, like a Photo or a Hit) a photo in the library."""
    if isinstance(raw, bool):
        raise UsageError(f"{raw!r} is not a query", "pass words, an image path or a photo")
    if isinstance(raw, int) or hasattr(raw, "id"):
        return Term(photo_id=int(getattr(raw, "id", raw)), weight=sign)
    if isinstance(raw, os.PathLike):
        return Term(image=os.fsencode(os.path.abspath(raw)), weight=sign)
    if not isinstance(raw, str):
        raise UsageError(f"{raw!r} is not a query", "pass words, an image path or a photo")
    weight = 1.0
    match = _WEIGHT.match(raw)
    if match and (force_text or not os.path.exists(raw)):  # words only: never look at the disk
        weight, raw = float(match.group(1)), match.group(2)
    if not raw.strip():
        raise UsageError("a query term is empty", 'describe what to find, e.g. photosearch query "a red bicycle"')
    if not force_text and os.path.isfile(raw):
        return Term(image=os.fsencode(os.path.abspath(raw)), weight=sign * weight)
    return Term(text=raw, weight=sign * weight)


def phrasings(text: str, templates: Sequence[str] | None) -> list[str]:
    """The texts whose vectors make up the query; without templates, the text alone."""
    if not templates:
        return [text]
    return [t.replace("{}", text) for t in templates]


def text_vector(encoder, text: str, templates: Sequence[str] | None) -> np.ndarray:
    vectors = encoder.encode_texts(phrasings(text, templates))
    return normalise(vectors.mean(axis=0))


def cached_text_vector(store: Store, get_encoder: Callable[[], object], text: str, templates: Sequence[str] | None) -> np.ndarray:
    """`text_vector`, remembered in the library: a repeated query loads no model."""
    import hashlib
    import json

    fingerprint = store.meta().get("model_fingerprint", "")
    key = hashlib.sha256(json.dumps([fingerprint, phrasings(text, templates)]).encode()).hexdigest()
    vector = store.cached_query(key)
    if vector is None:
        vector = text_vector(get_encoder(), text, templates)
        store.cache_query(key, vector)
    return vector


def normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def image_vector(store: Store, path: bytes, get_encoder: Callable[[], object]) -> tuple[np.ndarray, int | None]:
    """The image's vector and its library row id (None if it isn't in the library).

    An indexed, unchanged image reuses its stored vector: no model is loaded for it.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"cannot read query image {os.fsdecode(path)}: {exc.strerror}", "check the path") from None
    stored = store.stored_vector(path)
    if stored is not None:
        info, mtime_ns, vector = stored
        if (info.size, mtime_ns) == (st.st_size, st.st_mtime_ns):
            return vector, info.id
    from photosearch.decode import decode

    encoder = get_encoder()
    try:
        photo = decode(path, encoder.image_size)
    except DecodeError as exc:
        raise UsageError(f"cannot use {os.fsdecode(path)} as a query image: {exc.reason}", "pass a photo, or --text to search for the words") from None
    crops = store.meta().get("crops", "centre")
    if crops != "centre" and encoder.worker_crop:  # cut as the library's photos were
        from photosearch.model.cut import model_inputs, photo_vectors

        vector = photo_vectors(encoder.encode_prepared(model_inputs(photo.image, encoder.cut.with_crops(crops))), crops)[0]
    else:
        vector = encoder.encode_images([encoder.preprocess(photo.image)])[0]
    return vector, (stored[0].id if stored else None)


@dataclass
class QueryVector:
    vector: np.ndarray
    own_ids: set[int]  # library rows of the query's own images


def build(
    terms: Sequence[Term],
    store: Store,
    get_encoder: Callable[[], object],
    templates: Sequence[str] | None,
    get_text_encoder: Callable[[], object] | None = None,
) -> QueryVector:
    """The query's unit vector. `get_encoder` gives the full model (needed for images not in
    the library); `get_text_encoder` something cheaper that only embeds text, if there is."""
    total = None
    own: set[int] = set()
    for term in terms:
        if term.photo_id is not None:
            vector = store.vector_of(term.photo_id)
            if vector is None:
                from photosearch.errors import NotFoundError

                raise NotFoundError(f"no photo {term.photo_id} in the library", "search for it first; ids come from results")
            own.add(term.photo_id)
        elif term.image is not None:
            vector, row_id = image_vector(store, term.image, get_encoder)
            if row_id is not None:
                own.add(row_id)
        else:
            vector = cached_text_vector(store, get_text_encoder or get_encoder, term.text or "", templates)
        total = term.weight * vector if total is None else total + term.weight * vector
    if total is None or float(np.linalg.norm(total)) < 1e-6:
        raise UsageError("the query terms cancel each other out", "change the --add/--sub terms or their weights")
    return QueryVector(normalise(total), own)


def search(
    store: Store,
    index,
    vector: np.ndarray,
    top: int,
    threshold: float | None = None,
    *,
    only: np.ndarray | None = None,
    exclude: set[int] | frozenset[int] = frozenset(),
    tiles: bool = False,
) -> list[Result]:
    """The `top` photos closest to `vector` (cosine), best first, at or above `threshold`.

    `only` restricts the search to those row ids (filters) *before* taking the top k;
    `exclude` leaves rows out (the query's own images). With `tiles`, the index holds a
    vector a tile (vectors.py): a photo scores its best tile, and is listed once.
    """
    from photosearch import vectors

    if only is not None:
        if exclude:
            only = only[~np.isin(only, np.fromiter(exclude, dtype=np.int64))]
        if len(only) == 0:
            return []
        available = len(only)
    else:
        available = index.ntotal
    k = min(top, available, index.ntotal)
    if k <= 0:
        return []
    query = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
    if tiles:
        hits = _best_tiles(index, query, k, only, exclude)
    else:
        scores, ids = vectors.search(index, query, k, only=only, exclude=None if only is not None else exclude)
        hits = [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
    if threshold is not None:
        hits = [(s, i) for s, i in hits if s >= threshold]
    photos = store.photos_by_id(i for _, i in hits)
    results = []
    for s, i in hits:
        if i in photos:
            results.append(Result(rank=len(results) + 1, score=s, photo=photos[i]))
    return results


def _best_tiles(index, query: np.ndarray, k: int, only: np.ndarray | None, exclude) -> list[tuple[float, int]]:
    """(score, photo id) of the k photos whose best tile is closest, best first. A photo
    has at most MAX_TILES entries, so the k * MAX_TILES best entries hold the best tile of
    each of the k best photos: one search, then each photo at its first (best) entry."""
    from photosearch import vectors
    from photosearch.model.cut import MAX_TILES
    from photosearch.store import TILE_IDS

    def entries_of(photo_ids) -> np.ndarray:
        ids = np.fromiter(photo_ids, dtype=np.int64) if not isinstance(photo_ids, np.ndarray) else photo_ids
        return (ids[:, None] * TILE_IDS + np.arange(MAX_TILES, dtype=np.int64)).ravel()

    wanted = min(index.ntotal, k * MAX_TILES)
    scores, ids = vectors.search(
        index, query, wanted,
        only=None if only is None else entries_of(only),
        exclude=None if only is not None or not exclude else set(entries_of(exclude).tolist()),
    )  # fmt: skip
    hits: list[tuple[float, int]] = []
    seen: set[int] = set()
    for score, entry in zip(scores[0], ids[0], strict=True):
        photo = int(entry) // TILE_IDS
        if entry >= 0 and photo not in seen:
            seen.add(photo)
            hits.append((float(score), photo))
            if len(hits) == k:
                break
    return hits
