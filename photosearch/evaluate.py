"""Retrieval quality on a labelled folder: recall@k, precision@10, mAP, zero-shot accuracy.

Each distinct label becomes a text query; a photo is relevant to it when the photo carries
that label. Zero-shot classification gives each photo the label whose text vector is
closest to its image vector (correct if it is one of the photo's labels). Every metric is
computed for three ways of phrasing the query, so prompt ensembling is measured against
the alternatives on the same photos:
  text      the label alone (what `query --no-ensemble` does)
  template  one template, "a photo of {}."
  ensemble  the default ensemble (what `query` does)
and, so the ensemble is also measured against the phrasings it averages, each phrasing of the
default ensemble on its own (under "phrasings"), with their mean as one more mode:
  single mean  the mean, per metric, of the ensemble's phrasings each used alone
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from photosearch.errors import UsageError
from photosearch.query import DEFAULT_TEMPLATES, phrasings, text_vector
from photosearch.store import Store

MODES: dict[str, Sequence[str] | None] = {
    "text": None,
    "template": ("a photo of {}.",),
    "ensemble": DEFAULT_TEMPLATES,
}
RECALL_AT = (1, 5, 10)


def load_labels(path: Path, folder: Path) -> dict[bytes, set[str]]:
    """Read a labels file: JSON {path: label or [labels]} or CSV rows `path,label[;label...]`.

    Paths are relative to `folder` unless absolute.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read labels file {path}: {exc.strerror}", "check --labels") from None
    entries: list[tuple[str, list[str]]] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"labels file {path} is not valid JSON: {exc}", "expect {\"path\": \"label\"}") from None
        if not isinstance(data, dict):
            raise UsageError(f"labels file {path} is not a JSON object", 'expect {"photo.jpg": "label", ...}')
        for name, value in data.items():
            entries.append((name, [value] if isinstance(value, str) else list(value)))
    else:
        for row in csv.reader(text.splitlines()):
            if not row or row[0].startswith("#") or row[0].lower() == "path":
                continue
            if len(row) < 2:
                raise UsageError(f"labels file {path}: row {row!r} has no label", "write rows as path,label")
            entries.append((row[0], [lab for cell in row[1:] for lab in cell.split(";")]))
    labels: dict[bytes, set[str]] = {}
    for name, values in entries:
        full = os.path.abspath(os.path.join(folder, name))
        clean = {v.strip() for v in values if v and v.strip()}
        if clean:
            labels[os.fsencode(full)] = clean
    if not labels:
        raise UsageError(f"labels file {path} has no labels", "write rows as path,label")
    return labels


def evaluate(store: Store, encoder, labels: dict[bytes, set[str]]) -> dict:
    """Metrics for every phrasing mode over the labelled photos that are in the library."""
    ids, matrix, photo_labels = _labelled_vectors(store, labels)
    if not photo_labels:
        raise UsageError("none of the labelled photos is in the library", "check the paths in the labels file")
    names = sorted({lab for labs in photo_labels for lab in labs})
    relevant = np.array([[name in labs for labs in photo_labels] for name in names])  # (labels, photos)
    report: dict = {
        "photos": len(photo_labels),
        "labels": len(names),
        "missing": len(labels) - len(photo_labels),
        "modes": {},
    }
    score = _scorer(store, ids, matrix)
    for mode, templates in MODES.items():
        text = np.stack([text_vector(encoder, name, templates) for name in names])
        report["modes"][mode] = _metrics(score(text), relevant)
    # Whether ensembling helps depends on the model and the photos, so measure it here: every
    # member of the ensemble alone, from one pass of the text tower over each label's phrasings.
    members = np.stack([encoder.encode_texts(phrasings(name, DEFAULT_TEMPLATES)) for name in names])  # (labels, T, D)
    singles = {t: _metrics(score(members[:, i]), relevant) for i, t in enumerate(DEFAULT_TEMPLATES)}
    report["phrasings"] = singles
    # Their mean is a column of its own, beside the ensemble (worst and best are in "phrasings";
    # as columns too they would wrap the table on an 80-column terminal).
    report["modes"]["single mean"] = {m: float(np.mean([s[m] for s in singles.values()])) for m in report["modes"]["ensemble"]}
    return report


def _scorer(store: Store, ids: np.ndarray, matrix: np.ndarray):
    """(labels, D) text vectors -> (labels, photos) scores, as a search scores photos: by
    their vector, or in a `--crops max` library by their best tile."""
    tiles = store.tiles_of(ids) if store.holds_tiles() else {}

    def score(text: np.ndarray) -> np.ndarray:
        scores = text @ matrix.T
        for column, row_id in enumerate(ids.tolist()):
            if row_id in tiles:
                scores[:, column] = (text @ tiles[row_id].T).max(axis=1)
        return scores

    return score


def _labelled_vectors(store: Store, labels: dict[bytes, set[str]]):
    ids, matrix, paths = store.vectors_for_paths(labels)
    return ids, matrix, [labels[p] for p in paths]


def _metrics(scores: np.ndarray, relevant: np.ndarray) -> dict:
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked_relevant = np.take_along_axis(relevant, order, axis=1)  # (labels, photos), best first
    out: dict = {}
    for k in RECALL_AT:
        out[f"recall@{k}"] = float(ranked_relevant[:, :k].any(axis=1).mean())
    # The share of a label's photos in its top 10 (of at most 10 it could hold): recall@10 in
    # the usual sense, where recall@k above counts labels with any relevant photo in the top k.
    found = ranked_relevant[:, :10].sum(axis=1) / np.maximum(np.minimum(relevant.sum(axis=1), 10), 1)
    out["found@10"] = float(found.mean())
    k10 = min(10, relevant.shape[1])
    out["precision@10"] = float(ranked_relevant[:, :k10].mean())
    hits = np.cumsum(ranked_relevant, axis=1)
    positions = np.arange(1, relevant.shape[1] + 1)
    precision_at_hit = np.where(ranked_relevant, hits / positions, 0.0)
    ap = precision_at_hit.sum(axis=1) / np.maximum(relevant.sum(axis=1), 1)
    out["mAP"] = float(ap.mean())
    predicted = scores.argmax(axis=0)  # for each photo, the best label
    out["zero_shot_accuracy"] = float(relevant[predicted, np.arange(relevant.shape[1])].mean())
    return out
