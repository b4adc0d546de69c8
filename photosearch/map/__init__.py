"""A map of the library: every photo's vector laid out in 2-D, grouped and named.

One module a step (docs/map.md has the measurements behind each choice):

    layout.py      2-D positions: t-SNE up to 1000 photos (tsne.py), UMAP above, sample + placing
                   past 50 k
    clusters.py    spherical k-means on the vectors themselves, k by silhouette
    vocabulary.py  the built-in names (a few hundred everyday photo subjects)
    outline.py     each cluster's outline (convex hull of its core) and label position
    cache.py       the layout and clusters, kept next to the library per generation
    render_html.py one self-contained offline HTML file (canvas, embedded thumbnails)
    render_png.py  a static picture of the same map (Pillow)

`build` is what `Library.map` calls; it never prints (`on_step` hears what it is doing).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from photosearch.errors import UsageError

EXAMPLES = 5  # photos nearest each cluster's centre, listed with it
TOP_LABELS = 3


@dataclass(frozen=True)
class MapCluster:
    """One group of photos on the map. `cluster` is 1-based, biggest first."""

    cluster: int
    size: int
    label: str
    label_score: float  # zero-shot probability of `label` for the cluster's centre, 0..1
    labels: list[tuple[str, float]]  # the best few labels, most probable first
    examples: list  # Photo: the members nearest the centre, nearest first
    position: tuple[float, float]  # where its label goes on the map, in [-1, 1]
    outline: list[tuple[float, float]]  # its core's convex hull on the map


@dataclass
class LibraryMap:
    """A map of (some of) the library's photos."""

    generation: int  # the library's generation it was made at
    method: str  # "pca", "tsne", "umap" or "umap+placed" (fitted on a sample, the rest placed)
    ids: np.ndarray  # (n,) photo ids
    positions: np.ndarray  # (n, 2) float32 in [-1, 1]
    assignment: np.ndarray  # (n,) 0-based cluster index of each photo (clusters[i])
    clusters: list[MapCluster]
    from_cache: bool = False  # the layout and clusters were the cached ones: nothing recomputed
    silhouette: float | None = None  # of the chosen number of clusters (None when given)
    photos: dict = field(default_factory=dict, repr=False)  # id -> Photo, for renderers
    closeness: np.ndarray | None = None  # (n,) cosine of each photo to its cluster's centre

    def __len__(self) -> int:
        return len(self.ids)

    def members(self, cluster: int) -> np.ndarray:
        """The ids of cluster `cluster`'s photos (1-based), nearest its centre first."""
        if not 1 <= cluster <= len(self.clusters):
            raise UsageError(f"no cluster {cluster} on this map", f"clusters are numbered 1 to {len(self.clusters)}")
        inside = np.flatnonzero(self.assignment == cluster - 1)
        if self.closeness is not None:
            inside = inside[np.argsort(-self.closeness[inside], kind="stable")]
        return self.ids[inside]


def build(
    store,
    library_path: Path,
    *,
    only: np.ndarray | None,
    names: Sequence[str],
    label_vectors: Callable[[], np.ndarray],
    logit_scale: float,
    clusters: int | None,
    method: str,
    on_step: Callable[[str], None],
    photos: bool = True,
) -> LibraryMap:
    """The map of the library's photos (`only` these ids, or all), from the cache when the
    library hasn't changed since it was made. `label_vectors()` gives the names' unit
    vectors (called once); the labels are always scored afresh (cheap: one vector a
    cluster), so other labels reuse the layout."""
    from photosearch.map import cache, layout

    if clusters is not None and clusters < 1:
        raise UsageError(f"{clusters} clusters is not a number of clusters", "ask for 1 or more, or leave --clusters out")
    if method not in layout.METHODS:
        raise UsageError(f"unknown layout {method!r}", f"use one of {', '.join(layout.METHODS)}")
    with store.snapshot():
        generation = store.generation()
        ids = store.photo_ids() if only is None else np.sort(np.asarray(only, dtype=np.int64))
        if len(ids) == 0:
            raise UsageError("no photos to map", "index a folder first, or loosen the filters" if only is not None else "index a folder first")
        name = cache.key(generation, None if only is None else ids, {"clusters": clusters, "method": method})
        entry = cache.load(library_path, name)
        from_cache = entry is not None
        if entry is None:
            entry = _compute(store, only, clusters, method, on_step)
            if not cache.save(library_path, name, generation, entry):
                on_step("could not write the map's cache next to the library; it will be computed again next time")
        else:
            on_step(f"reusing the map cached for library generation {generation}")
        example_ids = entry["examples"]
        shown = store.photos_by_id(np.concatenate([entry["ids"], example_ids.ravel()]) if photos else example_ids.ravel()[example_ids.ravel() >= 0])
    from photosearch.results import Photo

    by_id = {i: Photo.from_row(info) for i, info in shown.items()}
    centres = entry["centres"]
    text = label_vectors()
    from photosearch.classify import probabilities

    chances = probabilities(centres @ text.T, logit_scale) if len(names) > 1 else np.ones((len(centres), 1))
    from photosearch.map.outline import core_outline

    found = []
    for index in range(len(centres)):
        members = entry["positions"][entry["assignment"] == index]
        position, outline = core_outline(members)
        order = np.argsort(-chances[index], kind="stable")[:TOP_LABELS]
        found.append(
            MapCluster(
                cluster=index + 1,
                size=len(members),
                label=names[order[0]],
                label_score=float(chances[index, order[0]]),
                labels=[(names[i], float(chances[index, i])) for i in order],
                examples=[by_id[i] for i in example_ids[index] if i >= 0 and i in by_id],
                position=position,
                outline=outline,
            )
        )
    silhouette = float(entry["silhouette"]) if "silhouette" in entry and not np.isnan(entry["silhouette"]) else None
    return LibraryMap(
        generation=generation,
        method=str(entry["method"]),
        ids=entry["ids"],
        positions=entry["positions"],
        assignment=entry["assignment"],
        clusters=found,
        from_cache=from_cache,
        silhouette=silhouette,
        photos=by_id if photos else {},
        closeness=entry.get("closeness"),
    )


def _compute(store, only: np.ndarray | None, clusters: int | None, method: str, on_step) -> dict[str, np.ndarray]:
    from photosearch.map import clusters as grouping
    from photosearch.map import layout

    on_step("reading the vectors")
    ids, vectors = store.all_vectors() if only is None else store.vectors_by_id(only)
    on_step(f"grouping {len(ids)} photos")
    grouped = grouping.group(vectors, clusters)
    positions, used = layout.layout(vectors, method=method, on_step=on_step)
    examples = np.full((len(grouped.centres), EXAMPLES), -1, np.int64)
    closeness = np.empty(len(ids), np.float32)
    for index, centre in enumerate(grouped.centres):
        members = np.flatnonzero(grouped.assignment == index)
        closeness[members] = vectors[members] @ centre
        nearest = members[np.argsort(-closeness[members], kind="stable")[:EXAMPLES]]
        examples[index, : len(nearest)] = ids[nearest]
    return {
        "ids": ids.astype(np.int64),
        "positions": positions.astype(np.float32),
        "assignment": grouped.assignment.astype(np.int32),
        "centres": grouped.centres.astype(np.float32),
        "examples": examples,
        "closeness": closeness,
        "method": np.array(used),
        "silhouette": np.float64(np.nan if grouped.silhouette is None else grouped.silhouette),
    }


def label_names(inline: Sequence[str] | None, file_text: str | None) -> list[str]:
    """The names clusters are labelled from: the user's (`--labels`, `--labels-file`) or
    the built-in vocabulary."""
    from photosearch.classify import parse_labels
    from photosearch.map.vocabulary import VOCABULARY

    if not inline and file_text is None:
        return list(VOCABULARY)
    return parse_labels(inline, file_text)


def shown_path(path) -> str:
    return os.fsdecode(path)
