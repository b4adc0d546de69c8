"""A cluster's outline on the map: the convex hull of its core.

UMAP puts a few members of a cluster far from the rest (a photo between two subjects), and a
hull around every member would cover half the map. The outline is the hull of the
`CORE` share of members nearest the cluster's median position; the label sits at that median.
"""

from __future__ import annotations

import numpy as np

CORE = 0.9


def core_outline(xy: np.ndarray, core: float = CORE) -> tuple[tuple[float, float], list[tuple[float, float]]]:
    """(label position, outline polygon counter-clockwise) of a cluster's (n, 2) positions."""
    if len(xy) == 0:
        return (0.0, 0.0), []
    middle = np.median(xy, axis=0)
    if len(xy) > 3:
        distance = np.linalg.norm(xy - middle, axis=1)
        xy = xy[distance <= np.quantile(distance, core)]
    return (float(middle[0]), float(middle[1])), convex_hull(xy)


def convex_hull(points: np.ndarray) -> list[tuple[float, float]]:
    """The convex hull of 2-D points, counter-clockwise (Andrew's monotone chain)."""
    unique = sorted({(float(x), float(y)) for x, y in np.asarray(points, dtype=np.float64)})
    if len(unique) <= 2:
        return unique

    def turn(o, a, b) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def chain(ordered):
        kept: list[tuple[float, float]] = []
        for p in ordered:
            while len(kept) >= 2 and turn(kept[-2], kept[-1], p) <= 0:
                kept.pop()
            kept.append(p)
        return kept

    lower, upper = chain(unique), chain(reversed(unique))
    return lower[:-1] + upper[:-1]
