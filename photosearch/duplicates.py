"""Near-duplicate groups: photos whose vectors are within a cosine threshold of each other.

Pairs come from FAISS range search (every photo against the index, in chunks, in C++), not
an O(n²) Python loop; groups are the connected components of those pairs (union-find).

It compares every pair exactly, from the stored vectors, so its cost grows with the square of
the photos compared, and it holds them all in memory twice (float32, ~4 KB a 512-d photo).
Measured (docs/big-index.md): 50 k photos ~1.5 min on a busy 2-core Zen 5, so ~10 h for 1 M;
10 M would take ~40 GB and weeks. Above MAX_PHOTOS it refuses, and says to narrow it down
with filters.
"""

from __future__ import annotations

import numpy as np

from photosearch.errors import UsageError

CHUNK = 2048
MAX_PHOTOS = 2_000_000


def check_size(n: int) -> None:
    """UsageError when comparing `n` photos pair by pair is beyond one machine."""
    if n > MAX_PHOTOS:
        raise UsageError(
            f"duplicates compares every pair of photos: {n:,} would need ~{4 * n * 1024 / 2**30:.0f} GB of memory "
            f"and days of CPU (at most {MAX_PHOTOS:,} at a time)",
            "narrow it with filters, e.g. --in FOLDER or --since/--until, and run it part by part",
        )


def find_groups(ids: np.ndarray, matrix: np.ndarray, threshold: float) -> list[list[tuple[int, float]]]:
    """Groups of row ids (two or more), each member with its cosine to the group's first.

    `matrix[i]` is the unit vector of row `ids[i]`.
    """
    import faiss

    n = len(ids)
    if n < 2:
        return []
    index = faiss.IndexFlatIP(matrix.shape[1])
    index.add(np.ascontiguousarray(matrix, dtype=np.float32))
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # FAISS keeps results with similarity strictly greater than the radius for inner product.
    radius = float(np.nextafter(np.float32(threshold), np.float32(-2)))
    for start in range(0, n, CHUNK):
        block = np.ascontiguousarray(matrix[start : start + CHUNK], dtype=np.float32)
        lims, _, found = index.range_search(block, radius)
        for offset in range(len(block)):
            i = start + offset
            for j in found[lims[offset] : lims[offset + 1]]:
                if j != i:
                    a, b = root(i), root(int(j))
                    if a != b:
                        parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(root(i), []).append(i)
    groups = []
    for rows in members.values():
        if len(rows) < 2:
            continue
        first = matrix[rows[0]]
        groups.append([(int(ids[r]), float(matrix[r] @ first)) for r in rows])
    groups.sort(key=lambda g: (-len(g), g[0][0]))
    return groups
