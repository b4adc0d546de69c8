"""Zero-shot tagging: which of the given labels fits each photo best.

Each label becomes a text vector (prompt-ensembled and cached like a query); a photo's probabilities are
softmax(logit_scale · cosine) over the labels, with the model's own learned logit scale, as
in CLIP's zero-shot classification.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from photosearch.errors import UsageError
from photosearch.query import cached_text_vector
from photosearch.store import Store


def parse_labels(inline: Sequence[str] | None, file_text: str | None) -> list[str]:
    """Labels from `--labels a,b,c` (repeatable) and/or a file with one label a line."""
    labels: list[str] = []
    for item in inline or []:
        labels += [part.strip() for part in item.split(",")]
    if file_text:
        labels += [line.strip() for line in file_text.splitlines() if not line.lstrip().startswith("#")]
    return unique_labels(labels)


def unique_labels(labels: Sequence[str]) -> list[str]:
    """The labels without blanks and repeats, in their order; at least two of them."""
    if isinstance(labels, str):
        raise UsageError("labels must be a list of words, not one string", 'e.g. ["cat", "dog", "beach"]')
    unique = list(dict.fromkeys(label.strip() for label in labels if label and label.strip()))
    if len(unique) < 2:
        raise UsageError("classification needs at least two labels", 'e.g. --labels "cat,dog,beach" or --labels-file labels.txt')
    return unique


def label_vectors(store: Store, get_encoder: Callable[[], object], labels: Sequence[str], templates: Sequence[str] | None) -> np.ndarray:
    """The labels' vectors, embedded like text queries and cached with them in the library:
    tagging again with the same labels loads no model."""
    return np.stack([cached_text_vector(store, get_encoder, label, templates) for label in labels])


def cosines(images: np.ndarray, labels: np.ndarray, tiles: Sequence[np.ndarray | None] = ()) -> np.ndarray:
    """(photos, labels) cosines of the photos' vectors; where a photo has tiles (`--crops
    max`), each label's is its best tile's, as a search scores it: a label that fits one
    part of a panorama is not averaged away by the rest."""
    scores = images @ labels.T
    for row, own in enumerate(tiles):
        if own is not None:
            scores[row] = (own @ labels.T).max(axis=0)
    return scores


def probabilities(cosine: np.ndarray, logit_scale: float) -> np.ndarray:
    """(photos, labels) softmax probabilities from their (photos, labels) cosines."""
    logits = logit_scale * cosine
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)
