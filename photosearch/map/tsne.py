"""Exact t-SNE in numpy, for maps of up to `MAX` photos.

Below a thousand photos the O(n²) gradient is cheap (a second or two), and it needs no
numba: UMAP's compilation alone costs ~15 s on a 2-core laptop, more than a small map is
worth, while PCA's plane keeps only 60 % of each photo's ten nearest neighbours (t-SNE
here: 90 %; docs/map.md). The method is van der Maaten & Hinton's (2008): Gaussian
affinities at a fixed perplexity, a Student-t kernel in 2-D, early exaggeration, momentum
and per-coordinate gains; initialised from PCA so the same input gives the same map.
"""

from __future__ import annotations

import numpy as np

MAX = 1000
PERPLEXITY = 30.0
ITERATIONS = 750
EXAGGERATED = 250  # the first iterations pull clusters together (exaggeration 12)


def embed(x: np.ndarray, init: np.ndarray, perplexity: float = PERPLEXITY, iterations: int = ITERATIONS) -> np.ndarray:
    """(n, 2) positions for (n, d) points, starting from `init` (n, 2)."""
    n = len(x)
    x = np.asarray(x, dtype=np.float64)
    norms = (x**2).sum(axis=1)
    squared = np.maximum(norms[:, None] + norms[None, :] - 2.0 * (x @ x.T), 0.0)
    p = _affinities(squared, min(perplexity, (n - 1) / 3))
    y = np.asarray(init, dtype=np.float64)
    y = (y - y.mean(axis=0)) / max(float(y[:, 0].std()), 1e-12) * 1e-4  # openTSNE's scale for a PCA start
    velocity = np.zeros_like(y)
    gains = np.ones_like(y)
    rate = max(n / 12.0, 50.0)
    for step in range(iterations):
        exaggeration, momentum = (12.0, 0.5) if step < EXAGGERATED else (1.0, 0.8)
        norms = (y**2).sum(axis=1)
        kernel = 1.0 / (1.0 + np.maximum(norms[:, None] + norms[None, :] - 2.0 * (y @ y.T), 0.0))
        np.fill_diagonal(kernel, 0.0)
        weights = (exaggeration * p - kernel / kernel.sum()) * kernel
        # Σ_j w_ij (y_i - y_j), as matrix products: no (n, n, 2) array.
        gradient = 4.0 * (weights.sum(axis=1)[:, None] * y - weights @ y)
        same = np.sign(gradient) == np.sign(velocity)
        gains = np.maximum(np.where(same, gains * 0.8, gains + 0.2), 0.01)
        velocity = momentum * velocity - rate * gains * gradient
        y += velocity
        y -= y.mean(axis=0)
    return y.astype(np.float32)


def _affinities(squared: np.ndarray, perplexity: float) -> np.ndarray:
    """Symmetric joint probabilities: each row's Gaussian bandwidth set by bisection so
    its entropy is log(perplexity)."""
    n = len(squared)
    target = np.log(perplexity)
    beta = np.ones(n)
    low, high = np.zeros(n), np.full(n, np.inf)
    off = ~np.eye(n, dtype=bool)
    for _ in range(64):
        shifted = squared - np.where(off, squared, np.inf).min(axis=1, keepdims=True)
        rows = np.where(off, np.exp(-shifted * beta[:, None]), 0.0)
        total = rows.sum(axis=1)
        rows /= total[:, None]
        entropy = -(rows * np.log(np.maximum(rows, 1e-300))).sum(axis=1)
        too_flat = entropy > target
        low = np.where(too_flat, beta, low)
        high = np.where(too_flat, high, beta)
        beta = np.where(np.isinf(high), beta * 2, (low + high) / 2)
        if np.all(np.abs(entropy - target) < 1e-5):
            break
    p = (rows + rows.T) / (2 * n)
    return np.maximum(p, 1e-12)
