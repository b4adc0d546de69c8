"""Search latency on synthetic libraries: exact search, candidate ANN indexes, and
photosearch's own index: float32 vs float16, cold-process loading, incremental updates.

    python bench/ann.py --sizes 10000,100000,1000000 --ann-sizes 100000,1000000  -> JSON on stdout,
                                                                               tables on stderr

Vectors: 512-d unit vectors drawn from a mixture of 1000 clusters with Zipf-like sizes
(a photo library has many near-duplicates and a long tail), each point its cluster's centre
plus isotropic noise (cosine ≈ 0.7 to its centre). Queries are fresh draws from the same
mixture. Smaller libraries are prefixes of the largest (the draws are i.i.d.).

"exact" is FAISS's IndexIDMap2(IndexFlatIP) over row ids: the ground truth, and what
photosearch searched below 50 k photos until it moved to numpy. Candidate ANN indexes (HNSW32,
IVF-Flat with nlist ≈ √n) are wrapped the same way; recall@10 is measured against the exact
top-10. Latency: one query at a time, top-10, median and p90 of 20 different queries (the
best of three such rounds, to step around other processes on a shared machine).

photosearch's own index (`photosearch/vectors.py`, searched through `vectors.search` as
`photosearch/query.py` does):
  precision  IVF as photosearch builds it, float32 vs float16 storage (--precision-sizes):
             recall@10 against exact float32 search, latency, build time, bytes.
  flat       the numpy exact search small libraries get (--flat-sizes), over float32 vectors
             and over float16-rounded ones (a float16 library's), recall as above.
  cold       a fresh process loading the index file and answering one query, as a repeated
             query does (--cold-sizes): before (a FAISS flat file, sha256-checked, imports
             FAISS) and now (the memory-mapped flat file, no FAISS); and the whole
             `photosearch query` command with its words' vector cached.
  update     an index run's cost to the index file (--update-sizes) on a synthetic SQLite
             library: a rebuild from SQLite, catching up after 1% of the photos changed, and
             a run that changed nothing.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    parser.add_argument("--precision-sizes", help="photosearch's IVF in float32 and float16 [default: --ann-sizes]")
    parser.add_argument("--flat-sizes", default="10000,49000", help="photosearch's numpy exact search")
    parser.add_argument("--cold-sizes", default="10000,49000", help="fresh-process load + query, before and now")
    parser.add_argument("--update-sizes", help="index file: rebuild vs catch up vs unchanged [default: 49000 and the smallest --ann-sizes]")
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="HNSW candidates only up to this size (1 M took 385 s to build and reached recall 0.84)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.precision_sizes is None:
        args.precision_sizes = args.ann_sizes
    if args.update_sizes is None:
        smallest_ann = sorted(sizes_of(args.ann_sizes))[:1]
        args.update_sizes = ",".join(str(n) for n in [49000, *smallest_ann])
    sizes = [int(s) for s in args.sizes.split(",") if s]
    ann_sizes = [int(s) for s in args.ann_sizes.split(",") if s]
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((CLUSTERS, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, CLUSTERS + 1) ** 0.7
    weights /= weights.sum()
    photosearch_sizes = [n for text in (args.precision_sizes, args.flat_sizes, args.cold_sizes) for n in sizes_of(text)]
    photosearch_sizes += [n + n // 100 for n in sizes_of(args.update_sizes)]
    biggest = max(sizes + ann_sizes + photosearch_sizes)
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

        if n <= args.hnsw_max:
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
    photosearch_rows(args, data, queries, out)
    print_tables(out)
    print(json.dumps(out))


# -- photosearch's own index ------------------------------------------------------------------


def sizes_of(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s]


def one_thread_latency(search, queries: np.ndarray) -> dict:
    """Like `latency`, for photosearch's search function (it pins FAISS to one thread for a
    single query itself)."""
    for q in queries[:3]:
        search(q.reshape(1, -1))
    rounds = []
    for _ in range(ROUNDS):
        times = []
        for q in queries[:TIMED_QUERIES]:
            t0 = time.perf_counter()
            search(q.reshape(1, -1))
            times.append((time.perf_counter() - t0) * 1000)
        rounds.append({"ms_median": statistics.median(times), "ms_p90": p90(times)})
    best = min(rounds, key=lambda r: r["ms_median"])
    return {**best, "ms_median_1thread": best["ms_median"], "ms_p90_1thread": best["ms_p90"]}


def photosearch_rows(args, data: np.ndarray, queries: np.ndarray, out: dict) -> None:
    from photosearch import vectors

    out["precision"], out["flat"], out["cold"], out["update"] = [], [], [], []
    for n in sizes_of(args.precision_sizes):
        x, ids = data[:n], np.arange(1, n + 1, dtype=np.int64)
        truth = exact_top(x, ids, queries)
        for dtype in ("float32", "float16"):
            stored = x if dtype == "float32" else x.astype(np.float16).astype(np.float32)
            t0 = time.perf_counter()
            index = vectors.build_from(ids, stored, DIM, dtype=dtype)
            build = time.perf_counter() - t0
            where = ""
            if vectors.codec(index).startswith("ivf-pq"):
                # The product re-ranks a compressed index's candidates exactly from SQLite
                # (vectors.load); here from these vectors in memory, so the latency leaves out
                # SQLite's reads (bench/big_index.py has them). Without it the row would be
                # the codes' own recall (~0.47 at 1 M), not what a user gets.
                from photosearch.rerank import Reranked

                index = Reranked(index, lambda wanted, stored=stored: (wanted, stored[wanted - 1]))
                where = " (re-ranked from memory)"
            _, got = vectors.search(index, queries, TOP)
            row = {"n": n, "kind": f"photosearch {vectors.kind(index)} {dtype}{where}", "dtype": dtype, "build_s": build,
                   "recall@10": overlap(got, truth), "bytes": index_bytes(getattr(index, "index", index)),
                   **one_thread_latency(lambda q, index=index: vectors.search(index, q, TOP), queries)}
            out["precision"].append(row)
            out["ann"].append(row)
            log(f"ann: {row['kind']} n={n}: {row['ms_median']:.2f} ms recall {row['recall@10']:.3f} {row['bytes'] / 2**20:.0f} MiB (build {build:.0f}s)")
            del index
            gc.collect()

    for n in sizes_of(args.flat_sizes):
        x, ids = data[:n], np.arange(1, n + 1, dtype=np.int64)
        truth = exact_top(x, ids, queries)
        for dtype in ("float32", "float16"):
            index = vectors.FlatIndex(ids, x if dtype == "float32" else x.astype(np.float16).astype(np.float32))
            _, got = vectors.search(index, queries, TOP)
            row = {"n": n, "kind": f"photosearch flat (numpy) {dtype} values", "dtype": dtype, "build_s": 0.0,
                   "recall@10": overlap(got, truth), "bytes": n * (DIM * 4 + 8),
                   **one_thread_latency(lambda q, index=index: vectors.search(index, q, TOP), queries)}
            out["flat"].append(row)
            log(f"ann: {row['kind']} n={n}: {row['ms_median']:.2f} ms recall {row['recall@10']:.3f}")

    cold_sizes, update_sizes = sizes_of(args.cold_sizes), sizes_of(args.update_sizes)
    if cold_sizes or update_sizes:
        with tempfile.TemporaryDirectory(prefix="ann-bench-") as tmp:
            for n in cold_sizes:
                out["cold"].append(cold_row(Path(tmp), data[:n], queries[0]))
            for n in update_sizes:
                out["update"].append(update_row(Path(tmp), data[:n], data[n : n + n // 100], np.random.default_rng(n)))


def exact_top(x: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> np.ndarray:
    flat = faiss.IndexFlatIP(DIM)
    flat.add(x)
    return ids[flat.search(queries, TOP)[1]]


def overlap(got: np.ndarray, truth: np.ndarray) -> float:
    return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(got, truth, strict=True)) / truth.size


def index_bytes(index) -> int:
    return len(faiss.serialize_index(index))


def synthetic_library(folder: Path, x: np.ndarray, purpose: str):
    """A photosearch library of these vectors (no photos or model behind them)."""
    from photosearch.store import Store

    db = folder / f"{purpose}-{len(x)}.db"
    store = Store.open(db, create=True)
    store.set_meta({"model_name": "synthetic", "model_pretrained": "", "model_fingerprint": "synthetic", "dim": DIM, "logit_scale": 100.0})
    write_rows(store, [f"/photos/{i:07d}.jpg" for i in range(len(x))], x)
    return store


def write_rows(store, names: list[str], x: np.ndarray) -> None:
    from photosearch.store import PhotoRow

    for start in range(0, len(names), 10_000):
        store.write_batch(
            [PhotoRow(name.encode(), 1, 1, 640, 480, "2020-01-01T00:00:00", "exif", v, None)
             for name, v in zip(names[start : start + 10_000], x[start : start + 10_000], strict=True)],
            [],
        )


COLD_BEFORE = """
import hashlib, json, sys, time
t0 = time.perf_counter()
import numpy as np
t1 = time.perf_counter()
import faiss
data = open(sys.argv[1], "rb").read()
assert hashlib.sha256(data).hexdigest() == sys.argv[2]
index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
faiss.omp_set_num_threads(1)
index.search(np.array([json.loads(sys.argv[3])], dtype=np.float32), 10)
t2 = time.perf_counter()
print(json.dumps({"ms": 1000 * (t2 - t1), "numpy_ms": 1000 * (t1 - t0), "faiss": "faiss" in sys.modules}))
"""

COLD_NOW = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
import numpy as np
from photosearch import vectors
from photosearch.store import Store
store = Store.open(Path(sys.argv[1]))
t1 = time.perf_counter()
loaded = vectors.load(store, persist=False)
assert loaded.rebuilt_reason is None, loaded.rebuilt_reason
vectors.search(loaded.index, np.array([json.loads(sys.argv[3])], dtype=np.float32), 10)
t2 = time.perf_counter()
print(json.dumps({"ms": 1000 * (t2 - t1), "numpy_ms": 0, "faiss": "faiss" in sys.modules}))
"""

COLD_IMPORT_FAISS = """
import json, time
import numpy
t0 = time.perf_counter()
import faiss
print(json.dumps({"ms": 1000 * (time.perf_counter() - t0), "numpy_ms": 0, "faiss": True}))
"""


def cold_row(folder: Path, x: np.ndarray, query: np.ndarray, runs: int = 9) -> dict:
    """Fresh processes, alternating: load the index file and answer one query, the way the
    previous version did and the way photosearch does now."""
    from photosearch import vectors

    n = len(x)
    store = synthetic_library(folder, x, "cold")
    vectors.refresh(store)
    old = folder / f"before-{n}.faiss"
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    flat.add_with_ids(x, np.arange(1, n + 1, dtype=np.int64))
    old.write_bytes(faiss.serialize_index(flat).tobytes())
    digest = hashlib.sha256(old.read_bytes()).hexdigest()
    q = json.dumps(query.tolist())
    cache_query_vector(store, "a cat", query)
    query_command = [sys.executable, "-m", "photosearch", "query", "a cat", "--db", str(store.path), "--json"]
    probes = {
        "before_ms": [COLD_BEFORE, str(old), digest],
        "now_ms": [COLD_NOW, str(store.path), ""],
        "import_faiss_ms": [COLD_IMPORT_FAISS, "", ""],
    }
    times: dict = {name: [] for name in [*probes, "query_s"]}
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(query_command, capture_output=True, check=True)
        times["query_s"].append(time.perf_counter() - t0)
        for name, (code, a, b) in probes.items():
            proc = subprocess.run([sys.executable, "-c", code, a, b, q], capture_output=True, text=True, check=True)
            result = json.loads(proc.stdout)
            times[name].append(result["ms"])
            if name == "now_ms":
                assert not result["faiss"], "the small-library query path imported FAISS"
    store.close()
    row = {"n": n, **{name: statistics.median(t) for name, t in times.items()},
           "before_file_bytes": old.stat().st_size, "now_file_bytes": vectors.index_path(store.path).stat().st_size}
    log(f"ann: cold load+search n={n}: before {row['before_ms']:.0f} ms (FAISS file + sha256 + import faiss), "
        f"now {row['now_ms']:.0f} ms (numpy, mmap); import faiss alone {row['import_faiss_ms']:.0f} ms; "
        f"whole `photosearch query` (cached words) {row['query_s']:.2f} s")
    return row


def cache_query_vector(store, text: str, vector: np.ndarray) -> None:
    """Store `text`'s query vector as a query would, so the command needs no model."""
    from photosearch.query import DEFAULT_TEMPLATES, phrasings

    key = hashlib.sha256(json.dumps(["synthetic", phrasings(text, DEFAULT_TEMPLATES)]).encode()).hexdigest()
    store.cache_query(key, vector)


def update_row(folder: Path, x: np.ndarray, fresh: np.ndarray, rng: np.random.Generator) -> dict:
    """What an index run costs the index file: a rebuild, catching up on 1% changed photos
    (half new, a quarter re-encoded, a quarter deleted), and a run that changed nothing."""
    from photosearch import vectors

    n = len(x)
    store = synthetic_library(folder, x, "update")
    t0 = time.perf_counter()
    assert vectors.refresh(store) == "rebuilt"
    rebuild = time.perf_counter() - t0
    changed = rng.choice(n, size=len(fresh) // 2, replace=False)
    write_rows(store, [f"/photos/new{i:07d}.jpg" for i in range(len(fresh) // 2)], fresh[: len(fresh) // 2])
    write_rows(store, [f"/photos/{i:07d}.jpg" for i in changed[: len(changed) // 2]], fresh[len(fresh) // 2 :][: len(changed) // 2])
    store.remove([f"/photos/{i:07d}.jpg".encode() for i in changed[len(changed) // 2 :]])
    t0 = time.perf_counter()
    assert vectors.refresh(store) == "updated"
    update = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert vectors.refresh(store) == "current"
    unchanged = time.perf_counter() - t0
    kind = store.meta()["index_kind"]
    store.close()
    row = {"n": n, "kind": kind, "changed": len(fresh), "rebuild_s": rebuild, "update_s": update, "unchanged_s": unchanged}
    log(f"ann: index file n={n} ({kind}): rebuild {rebuild:.1f}s, catch up on {len(fresh)} changes {update:.2f}s, unchanged {unchanged * 1000:.1f} ms")
    return row


def print_tables(out: dict) -> None:
    """The photosearch rows as Markdown tables, on stderr (stdout is bench.py's JSON)."""
    lines = []
    if out.get("precision") or out.get("flat"):
        lines += ["", "| photosearch index | vectors | recall@10 vs exact fp32 | median ms (1 thread) | p90 ms | MiB | build s |", "|---|---|---|---|---|---|---|"]
        for r in out["precision"] + out["flat"]:
            lines.append(f"| {r['kind']} | {r['n']:,} | {r['recall@10']:.3f} | {r['ms_median']:.2f} | {r['ms_p90']:.2f} | {r['bytes'] / 2**20:.0f} | {r['build_s']:.1f} |")
    if out.get("cold"):
        lines += ["", "| fresh process, median of 9 | vectors | load index + 1 query, before: FAISS file, sha256 (ms) | now: numpy, mmap (ms) | import faiss alone (ms) | file MiB before / now | whole `photosearch query`, cached words, now (s) |", "|---|---|---|---|---|---|---|"]
        for r in out["cold"]:
            lines.append(f"| | {r['n']:,} | {r['before_ms']:.0f} | {r['now_ms']:.0f} | {r['import_faiss_ms']:.0f} | {r['before_file_bytes'] / 2**20:.0f} / {r['now_file_bytes'] / 2**20:.0f} | {r['query_s']:.2f} |")
    if out.get("update"):
        lines += ["", "| index run's work on the index file | vectors | index | rebuild s | catch up on 1% changed s | nothing changed s |", "|---|---|---|---|---|---|"]
        for r in out["update"]:
            lines.append(f"| {r['changed']:,} changed | {r['n']:,} | {r['kind']} | {r['rebuild_s']:.1f} | {r['update_s']:.2f} | {r['unchanged_s']:.3f} |")
    if lines:
        print("\n".join(lines), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
