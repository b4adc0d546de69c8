"""Search latency on synthetic libraries: photosearch's exact search, and candidate ANN indexes.

    python bench/ann.py --sizes 10000,100000,1000000 --ann-sizes 100000,1000000  -> JSON on stdout

Vectors: 512-d unit vectors drawn from a mixture of 1000 clusters with Zipf-like sizes
(a photo library has many near-duplicates and a long tail), each point its cluster's centre
plus isotropic noise (cosine ≈ 0.7 to its centre). Queries are fresh draws from the same
mixture. Smaller libraries are prefixes of the largest (the draws are i.i.d.).

"exact" is the product's search path: `photosearch/vectors.py` builds
IndexIDMap2(IndexFlatIP) over SQLite row ids, and `photosearch/query.py` calls
`index.search(query, k)` for one query. Candidate ANN indexes (HNSW32, IVF-Flat with
nlist ≈ √n) are wrapped the same way; recall@10 is measured against the exact top-10.
Latency: one query at a time, top-10, median and p90 of 20 different queries (the best of
three such rounds, to step around other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import time

import faiss
import numpy as np

DIM = 512
CLUSTERS = 1000
NOISE = 0.04  # per-dimension sigma: |noise|² ≈ 512·0.04² ≈ 0.8 → cos to centre ≈ 0.75
TOP = 10
TIMED_QUERIES = 20
ROUNDS = 3
RECALL_QUERIES = 200


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def mixture(n: int, rng: np.random.Generator, centres: np.ndarray, weights: np.ndarray, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        labels = rng.choice(len(centres), size=m, p=weights)
        block = centres[labels] + rng.standard_normal((m, DIM), dtype=np.float32) * NOISE
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + m] = block
    return out


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def latency(index, queries: np.ndarray) -> dict:
    """Median and p90 of TIMED_QUERIES single-query searches; best of ROUNDS rounds, because
    on a shared 2-core machine another process waking up stalls OpenMP for milliseconds."""
    for q in queries[:3]:
        index.search(q.reshape(1, -1), TOP)  # warm-up
    rounds = []
    for _ in range(ROUNDS):
        times = []
        for q in queries[:TIMED_QUERIES]:
            t0 = time.perf_counter()
            index.search(q.reshape(1, -1), TOP)
            times.append((time.perf_counter() - t0) * 1000)
        rounds.append({"ms_median": statistics.median(times), "ms_p90": p90(times)})
    return min(rounds, key=lambda r: r["ms_median"])


def latencies(index, queries: np.ndarray) -> dict:
    """At FAISS's default thread count (what the product gets), and on one thread: for a
    single query a second OpenMP thread buys little, and on a busy machine waiting for it to
    be scheduled can cost a whole scheduler time slice."""
    out = latency(index, queries)
    default = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        one = latency(index, queries)
    finally:
        faiss.omp_set_num_threads(default)
    out["ms_median_1thread"], out["ms_p90_1thread"] = one["ms_median"], one["ms_p90"]
    return out


def recall(index, queries: np.ndarray, truth: np.ndarray) -> float:
    _, ids = index.search(queries, TOP)
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids, truth, strict=True)]
    return sum(hits) / (TOP * len(truth))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--ann-sizes", default="100000,1000000")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    ann_sizes = [int(s) for s in args.ann_sizes.split(",") if s]
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((CLUSTERS, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, CLUSTERS + 1) ** 0.7
    weights /= weights.sum()
    biggest = max(sizes + ann_sizes)
    t0 = time.perf_counter()
    data = mixture(biggest, rng, centres, weights)
    queries = mixture(RECALL_QUERIES, rng, centres, weights)
    log(f"ann: {biggest} synthetic vectors in {time.perf_counter() - t0:.1f}s")
    out: dict = {"faiss": faiss.__version__, "omp_threads": faiss.omp_get_max_threads(), "exact": [], "ann": []}

    for n in sorted(set(sizes + ann_sizes)):
        x = data[:n]
        ids = np.arange(1, n + 1, dtype=np.int64)  # SQLite row ids start at 1
        t0 = time.perf_counter()
        flat = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
        flat.add_with_ids(x, ids)
        build = time.perf_counter() - t0
        _, truth = flat.search(queries, TOP)
        if n in sizes:
            row = {"n": n, "build_s": build, **latencies(flat, queries)}
            out["exact"].append(row)
            log(f"ann: exact n={n}: {row['ms_median']:.2f} ms ({row['ms_median_1thread']:.2f} ms on 1 thread)")
        del flat
        gc.collect()
        if n not in ann_sizes:
            continue

        t0 = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        index = faiss.IndexIDMap2(hnsw)
        index.add_with_ids(x, ids)
        build = time.perf_counter() - t0
        for ef in (32, 64, 128):
            hnsw.hnsw.efSearch = ef
            row = {"n": n, "kind": f"HNSW32 efSearch={ef}", "build_s": build, "recall@10": recall(index, queries, truth), **latencies(index, queries)}
            out["ann"].append(row)
            log(f"ann: {row['kind']} n={n}: {row['ms_median']:.2f} ms ({row['ms_median_1thread']:.2f} ms on 1 thread) recall {row['recall@10']:.3f} (build {build:.0f}s)")
        del index, hnsw
        gc.collect()

        nlist = int(round(math.sqrt(n)))
        t0 = time.perf_counter()
        quantizer = faiss.IndexFlatIP(DIM)
        ivf = faiss.IndexIVFFlat(quantizer, DIM, nlist, faiss.METRIC_INNER_PRODUCT)
        train = x[rng.choice(n, size=min(n, 50 * nlist), replace=False)]
        ivf.train(train)
        index = faiss.IndexIDMap2(ivf)
        index.add_with_ids(x, ids)
        build = time.perf_counter() - t0
        for nprobe in (8, 16):
            ivf.nprobe = nprobe
            row = {"n": n, "kind": f"IVF{nlist},Flat nprobe={nprobe}", "build_s": build, "recall@10": recall(index, queries, truth), **latencies(index, queries)}
            out["ann"].append(row)
            log(f"ann: {row['kind']} n={n}: {row['ms_median']:.2f} ms ({row['ms_median_1thread']:.2f} ms on 1 thread) recall {row['recall@10']:.3f} (build {build:.0f}s)")
        del index, ivf, quantizer
        gc.collect()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
