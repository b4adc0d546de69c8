"""photosearch's big index on a synthetic library of N vectors (default 10 M): build time,
size on disk and in memory, single-query latency, recall@10 against exact search, and the
peak memory of a query process.

    .venv/bin/python bench/big_index.py                  # 10 M: ~11 GB of SQLite, hours on 2 cores
    .venv/bin/python bench/big_index.py --n 1000000      # 1 M: ~1.1 GB, minutes

It goes through the product: the vectors are written to a real photosearch library (float16,
as `--vectors float16` stores them) with `Store.write_batch`, the index is built by
`vectors.refresh` as an index run does, and queries run in a fresh process through
`vectors.load` and `vectors.search`, which re-ranks the compressed index's candidates from
SQLite (photosearch/rerank.py).

Vectors: bench/ann.py's generator (512-d, 1000 Zipf-sized clusters, cos ≈ 0.75 to the
centre), drawn a chunk at a time, so N × 512 floats are never in memory at once. The exact
top 10 of each query is kept up to date chunk by chunk as the library is written, against
the float16-rounded vectors the library stores (what an exact search of the library gives),
for the whole library and for two filters (every 10th photo, every 1000th).

Everything goes under --dir (default .cache/bench/big-index/); a library already there with
the same N and seed is reused, so a second run only builds and queries. Markdown table on
stderr and in DIR/results-N.md, raw numbers in DIR/results-N.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ann  # noqa: E402  (bench/ is not a package)

TOP = 10
CHUNK = 100_000
FILTERS = {"every 10th photo": 10, "every 1000th photo": 1000}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def generator(seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ann.CLUSTERS, ann.DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, ann.CLUSTERS + 1) ** 0.7
    weights /= weights.sum()
    return rng, centres, weights


class RunningTop:
    """The exact top k ids of each query over chunks seen so far."""

    def __init__(self, queries: np.ndarray):
        self.queries = queries
        self.scores = np.full((len(queries), TOP), -np.inf, dtype=np.float32)
        self.ids = np.full((len(queries), TOP), -1, dtype=np.int64)

    def add(self, ids: np.ndarray, matrix: np.ndarray) -> None:
        if len(ids) == 0:
            return
        scores = np.concatenate([self.scores, self.queries @ matrix.T], axis=1)
        every = np.concatenate([self.ids, np.broadcast_to(ids, (len(self.queries), len(ids)))], axis=1)
        best = np.argsort(-scores, axis=1, kind="stable")[:, :TOP]
        self.scores = np.take_along_axis(scores, best, axis=1)
        self.ids = np.take_along_axis(every, best, axis=1)


def make_library(db: Path, n: int, seed: int, queries: np.ndarray) -> dict:
    """The synthetic float16 library and the exact answers, reused when already made."""
    from photosearch.store import Store

    truth_file = db.with_suffix(".truth.npz")
    if db.exists() and truth_file.exists():
        store = Store.open(db)
        if store.count() == n and store.meta().get("bench_seed") == str(seed):
            store.close()
            log(f"big-index: reusing {db} ({n:,} vectors)")
            return dict(np.load(truth_file))
        store.close()
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()
    store = Store.open(db, create=True)
    store.set_meta({"model_name": "synthetic", "model_pretrained": "", "model_fingerprint": "synthetic", "dim": ann.DIM, "logit_scale": 100.0})
    store.set_vector_dtype("float16")
    rng, centres, weights = generator(seed)
    tops = {"all": RunningTop(queries), **{name: RunningTop(queries) for name in FILTERS}}
    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        x = ann.mixture(min(CHUNK, n - start), rng, centres, weights)
        ann.write_rows(store, [f"/photos/{i:08d}.jpg" for i in range(start, start + len(x))], x)
        ids = np.arange(start + 1, start + len(x) + 1, dtype=np.int64)  # SQLite's row ids, from 1
        stored = x.astype(np.float16).astype(np.float32)
        tops["all"].add(ids, stored)
        for name, every in FILTERS.items():
            keep = ids % every == 0
            tops[name].add(ids[keep], stored[keep])
        if (start // CHUNK) % 10 == 9:
            done = start + len(x)
            log(f"big-index: {done:,} vectors written, {done / (time.perf_counter() - t0):,.0f}/s")
    store.set_meta({"bench_seed": seed})
    assert int(store.conn.execute("SELECT max(id) FROM photos").fetchone()[0]) == n
    store.close()
    truth = {name: top.ids for name, top in tops.items()}
    np.savez(truth_file, **truth)
    log(f"big-index: library of {n:,} vectors written in {time.perf_counter() - t0:.0f}s ({db.stat().st_size / 2**30:.1f} GiB)")
    return truth


BUILD = """
import json, os, resource, sys, time
from pathlib import Path
import faiss
faiss.omp_set_num_threads(int(sys.argv[2]))
from photosearch import vectors
from photosearch.store import Store
store = Store.open(Path(sys.argv[1]))
t0 = time.perf_counter()
outcome = vectors.refresh(store)
seconds = time.perf_counter() - t0
meta = store.meta()
print(json.dumps({"outcome": outcome, "build_s": seconds, "kind": meta["index_kind"], "codec": meta.get("index_codec"),
                  "file_bytes": int(meta["index_bytes"]), "build_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

QUERY = """
import json, resource, statistics, sys, time
from pathlib import Path
import numpy as np

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

before = rss()
from photosearch import vectors
from photosearch.store import Store
queries = np.load(sys.argv[2])
truth = dict(np.load(sys.argv[3]))
filters = json.loads(sys.argv[4])
store = Store.open(Path(sys.argv[1]))
t0 = time.perf_counter()
loaded = vectors.load(store, persist=False)
load_s = time.perf_counter() - t0
assert loaded.rebuilt_reason is None, loaded.rebuilt_reason
index = loaded.index
after_load = rss()

def overlap(got, want):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, want)]))

def timed(only=None, rounds=1):
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        _, ids = vectors.search(index, q.reshape(1, -1), 10, only=only)
        times.append((time.perf_counter() - t) * 1000)
        found.append(ids[0].tolist())
    return times, found

timed()  # warm-up: the SQLite pages and the codes, as a server's second query finds them
times, found = timed()
out = {"kind": vectors.kind(index), "load_s": load_s, "index_rss": after_load - before,
       "ms_median": statistics.median(times), "ms_p95": float(np.percentile(times, 95)),
       "recall@10": overlap(found, truth["all"].tolist())}
out["query_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out["depths"] = {}
default_depth = getattr(index, "depth", None)
for depth in json.loads(sys.argv[5]) if default_depth else []:
    index.depth = depth
    times, found = timed()
    out["depths"][depth] = {"ms_median": statistics.median(times), "ms_p95": float(np.percentile(times, 95)),
                            "recall@10": overlap(found, truth["all"].tolist())}
if default_depth:
    index.depth = default_depth
fetch = getattr(index, "fetch", None)
if fetch is not None:
    rng = np.random.default_rng(1)
    for depth in (100, 500, 1000):
        spent = []
        for _ in range(20):
            ids = np.sort(rng.choice(index.ntotal, size=depth, replace=False) + 1)
            t = time.perf_counter()
            fetch(ids)
            spent.append((time.perf_counter() - t) * 1000)
        out[f"fetch_{depth}_ms"] = statistics.median(spent)
n = index.ntotal
out["filters"] = {}
for name, every in filters.items():
    only = np.arange(every, n + 1, every, dtype=np.int64)
    times, found = timed(only)
    out["filters"][name] = {"allowed": len(only), "ms_median": statistics.median(times),
                            "ms_p95": float(np.percentile(times, 95)), "recall@10": overlap(found, truth[name].tolist())}
print(json.dumps(out))
"""

CATCH_UP = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
import numpy as np
import ann
from photosearch import vectors
from photosearch.store import Store
store = Store.open(Path(sys.argv[1]))
count = int(sys.argv[2])
rng = np.random.default_rng(12345)
centres = rng.standard_normal((ann.CLUSTERS, ann.DIM), dtype=np.float32)
centres /= np.linalg.norm(centres, axis=1, keepdims=True)
x = ann.mixture(count, rng, centres, np.full(ann.CLUSTERS, 1.0 / ann.CLUSTERS))
names = [f"/photos/new{i:08d}.jpg" for i in range(count)]
ann.write_rows(store, names, x)
t0 = time.perf_counter()
added = vectors.refresh(store)
add_s = time.perf_counter() - t0
index = vectors.load(store, persist=False).index
found = sum(int(vectors.search(index, v.reshape(1, -1), 1)[1][0][0] == store.photo_by_path(name.encode()).id)
            for v, name in zip(x[:100], names[:100]))
store.remove([name.encode() for name in names])  # the library as it was, for the next run
t0 = time.perf_counter()
removed = vectors.refresh(store)
print(json.dumps({"count": count, "add": added, "add_s": add_s, "found_first_of_100": found,
                  "remove": removed, "remove_s": time.perf_counter() - t0}))
"""

DUPLICATES = """
import json, sys, time
from pathlib import Path
import faiss
faiss.omp_set_num_threads(int(sys.argv[3]))
from photosearch.duplicates import find_groups
from photosearch.store import Store
store = Store.open(Path(sys.argv[1]))
n = int(sys.argv[2])
t0 = time.perf_counter()
ids, matrix = store.vectors_by_id(range(1, n + 1))
read = time.perf_counter() - t0
t0 = time.perf_counter()
groups = find_groups(ids, matrix, 0.97)
print(json.dumps({"n": n, "read_s": read, "groups_s": time.perf_counter() - t0, "groups": len(groups)}))
"""


def run_json(code: str, *args: str, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"big-index: a child process failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    import bench

    info = bench.first_cpu()
    return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="vectors in the library")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="FAISS threads while building")
    parser.add_argument("--dir", type=Path, default=Path(".cache/bench/big-index"))
    parser.add_argument("--compress-above", type=int, help="PHOTOSEARCH_COMPRESS_ABOVE for this run (default: the product's)")
    parser.add_argument("--duplicates-n", type=int, default=0, help="also time `duplicates` on the first N vectors")
    parser.add_argument("--depths", default="10,100,250,500,1000", help="re-rank depths to try besides the product's (10: the codes' own top 10)")
    parser.add_argument("--catch-up", type=int, default=0, help="then add N photos, time the index run's catch-up, and remove them again")
    parser.add_argument("--library-only", action="store_true", help="write the library (and the exact answers), then stop")
    parser.add_argument("--keep-index", action="store_true", help="reuse an index file already built for this library")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    db = args.dir / f"lib-{args.n}.db"
    rng, centres, weights = generator(args.seed + 1)  # queries: fresh draws of the same mixture
    _, centres, weights = generator(args.seed)
    queries = ann.mixture(args.queries, rng, centres, weights)
    make_library(db, args.n, args.seed, queries)
    if args.library_only:
        return
    queries_file, truth_file = args.dir / f"queries-{args.n}.npy", db.with_suffix(".truth.npz")
    np.save(queries_file, queries)

    env = dict(os.environ)
    if args.compress_above is not None:
        env["PHOTOSEARCH_COMPRESS_ABOVE"] = str(args.compress_above)
    from photosearch import vectors

    if not args.keep_index:
        for kind in (vectors.PHOTOS, vectors.TILES):
            vectors.index_path(db, kind).unlink(missing_ok=True)
    log(f"big-index: building the index of {args.n:,} vectors (FAISS threads {args.threads}) ...")
    built = run_json(BUILD, str(db), str(args.threads), env=env)
    log(f"big-index: {built['outcome']} {built['kind']} in {built['build_s']:.0f}s, {built['file_bytes'] / 2**20:.0f} MiB")
    depths = [int(d) for d in args.depths.split(",") if d]
    queried = run_json(QUERY, str(db), str(queries_file), str(truth_file), json.dumps(FILTERS), json.dumps(depths), env=env)
    result = {"n": args.n, "cpu": cpu_name(), "cores": os.cpu_count(), "loadavg": os.getloadavg(),
              "library_bytes": db.stat().st_size, **built, **queried}
    if args.catch_up:
        log(f"big-index: catching up on {args.catch_up:,} new photos, then on their removal ...")
        result["catch_up"] = run_json(CATCH_UP, str(db), str(args.catch_up), str(Path(__file__).resolve().parent), env=env)
    if args.duplicates_n:
        result["duplicates"] = run_json(DUPLICATES, str(db), str(args.duplicates_n), str(args.threads), env=env)
    table = report(result)
    log(table)
    (args.dir / f"results-{args.n}.json").write_text(json.dumps(result, indent=1))
    (args.dir / f"results-{args.n}.md").write_text(table + "\n")


def report(r: dict) -> str:
    gib = 2**30
    lines = [
        f"photosearch big index, {r['n']:,} synthetic clustered 512-d float16 vectors; {r['cpu']}, {r['cores']} cores, "
        f"load average {r['loadavg'][0]:.1f} at the end",
        "",
        "| index | build s | build peak RSS GiB | file GiB | index in a query process GiB | peak RSS of the query process GiB | load s | query ms median | p95 | recall@10 | library GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['kind']} | {r['build_s']:.0f} | {r['build_peak_rss'] / gib:.2f} | {r['file_bytes'] / gib:.2f} | {r['index_rss'] / gib:.2f} | {r['query_peak_rss'] / gib:.2f} | "
        f"{r['load_s']:.1f} | {r['ms_median']:.1f} | {r['ms_p95']:.1f} | {r['recall@10']:.3f} | {r['library_bytes'] / gib:.1f} |",
    ]
    if r.get("depths"):
        lines += ["", "| re-rank depth (candidates scored exactly) | query ms median | p95 | recall@10 |", "|---|---|---|---|"]
        for depth, d in r["depths"].items():
            lines.append(f"| {depth} | {d['ms_median']:.1f} | {d['ms_p95']:.1f} | {d['recall@10']:.3f} |")
    lines += ["", "| filter | allowed | query ms median | p95 | recall@10 within the filter |", "|---|---|---|---|---|"]
    for name, f in r["filters"].items():
        lines.append(f"| {name} | {f['allowed']:,} | {f['ms_median']:.1f} | {f['ms_p95']:.1f} | {f['recall@10']:.3f} |")
    if "fetch_1000_ms" in r:
        lines += ["", "Fetching candidates' vectors from SQLite by id (median ms): "
                  + ", ".join(f"{d}: {r[f'fetch_{d}_ms']:.1f}" for d in (100, 500, 1000))]
    if "catch_up" in r:
        c = r["catch_up"]
        lines += ["", f"An index run after {c['count']:,} new photos: {c['add']} in {c['add_s']:.0f}s "
                  f"({c['found_first_of_100']} of 100 of them their own best match at once); "
                  f"after removing them again: {c['remove']} in {c['remove_s']:.0f}s"]
    if "duplicates" in r:
        d = r["duplicates"]
        lines += ["", f"`duplicates` (exact, every pair) on {d['n']:,} vectors: {d['groups_s']:.0f}s "
                  f"(+{d['read_s']:.0f}s reading them), {d['groups']} groups"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
