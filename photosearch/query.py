"""Turn a query into a vector and rank the library's photos against it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from photosearch.store import PhotoInfo, Store

# Prompt ensembling: the query is embedded in several phrasings and the unit vectors are
# averaged (then re-normalised). The raw query is one member, so a query that is already a
# sentence keeps its own voice. Phrasings follow the CLIP paper's ImageNet templates that
# fit photos; see README "Prompt ensembling" for the measurements behind the default.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a photo of {}.",
    "a good photo of {}.",
    "a close-up photo of {}.",
    "a cropped photo of {}.",
    "a bright photo of {}.",
    "a blurry photo of {}.",
)


@dataclass
class Result:
    rank: int
    score: float
    photo: PhotoInfo


def phrasings(text: str, templates: Sequence[str] | None) -> list[str]:
    """The texts whose vectors make up the query; without templates, the text alone."""
    if not templates:
        return [text]
    return [t.replace("{}", text) if "{}" in t else f"{t} {text}" for t in templates]


def text_vector(encoder, text: str, templates: Sequence[str] | None) -> np.ndarray:
    vectors = encoder.encode_texts(phrasings(text, templates))
    return normalise(vectors.mean(axis=0))


def normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def search(store: Store, index, vector: np.ndarray, top: int, threshold: float | None = None) -> list[Result]:
    """The `top` photos closest to `vector` (cosine), best first, at or above `threshold`."""
    k = min(top, index.ntotal)
    if k <= 0:
        return []
    scores, ids = index.search(np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32), k)
    hits = [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
    if threshold is not None:
        hits = [(s, i) for s, i in hits if s >= threshold]
    photos = store.photos_by_id(i for _, i in hits)
    results = []
    for s, i in hits:
        if i in photos:
            results.append(Result(rank=len(results) + 1, score=s, photo=photos[i]))
    return results
