"""What `photosearch map` costs: time and peak memory at 10 k, 100 k and 1 M vectors.

    python bench/map.py                       # 10k, 100k, 1M: a table on stdout (~10 min on 2 cores)
    python bench/map.py --sizes 2000,10000    # a quick look
    python bench/map.py --draw 50000          # the HTML map of 50 k photos in headless Chromium

Vectors: bench/ann.py's synthetic library (512-d unit vectors from a mixture of 1000
clusters with Zipf-like sizes, cosine ≈ 0.7 to their centre). Each size runs in a fresh
process, so its peak memory (ru_maxrss) is its own and UMAP's numba compilation is paid
each time, as by a first `photosearch map` after a restart. Stages, as `photosearch map`
runs them (photosearch/map): grouping (spherical k-means, k by silhouette), PCA to 50-d, the
layout (t-SNE ≤ 1000, UMAP ≤ 50 k, else UMAP on a 50 k sample and the rest placed by
nearest neighbours), then the cache: writing the entry, and reading it back (what an
unchanged library's next map costs). Reading vectors from SQLite and naming the clusters are
left out: the first is the library's own cost (every command pays it), the second is one
vector a cluster.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))


def one(n: int, seed: int) -> dict:
    import ann
    import numpy as np

    from photosearch.map import cache, clusters, layout

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ann.CLUSTERS, ann.DIM), dtype=np.float32)
    weights = 1.0 / np.arange(1, ann.CLUSTERS + 1)
    x = ann.mixture(n, rng, centres, weights / weights.sum())
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times: dict[str, float] = {}
    started = time.perf_counter()
    grouped = clusters.group(x)
    times["group_s"] = time.perf_counter() - started
    marks: dict[str, float] = {}
    began = time.perf_counter()
    positions, method = layout.layout(x, on_step=lambda message: marks.setdefault(message.split(" ")[0], time.perf_counter()))
    times["layout_s"] = time.perf_counter() - began
    if "placing" in marks:
        times["place_s"] = time.perf_counter() - marks["placing"]
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / "library.db"
        entry = {"ids": np.arange(n, dtype=np.int64), "positions": positions, "assignment": grouped.assignment.astype(np.int32),
                 "centres": grouped.centres, "closeness": np.ones(n, np.float32)}  # fmt: skip
        began = time.perf_counter()
        cache.save(library, "bench", 1, entry)
        times["cache_write_s"] = time.perf_counter() - began
        began = time.perf_counter()
        assert cache.load(library, "bench") is not None
        times["cache_read_s"] = time.perf_counter() - began
    return {
        "n": n,
        "method": method,
        "clusters": len(grouped.centres),
        "total_s": times["group_s"] + times["layout_s"] + times["cache_write_s"],
        **times,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "vectors_mb": x.nbytes / 2**20,
        "generator_mb": base_mb,
    }


def drawing(n: int, seed: int) -> dict:
    """The HTML map of `n` photos in headless Chromium (tests/support/browser.py): the file's
    size, how long it takes to open and draw, and frame times while zooming and panning.
    Positions are a 2-D mixture (what is measured is the drawing, not the layout); every
    photo has a tile, cut from a few hundred generated JPEGs."""
    import numpy as np
    from PIL import Image

    from photosearch.map import LibraryMap, MapCluster, render_html
    from photosearch.map.outline import core_outline
    from photosearch.results import Photo
    from tests.support import browser

    rng = np.random.default_rng(seed)
    k = 30
    centres = rng.uniform(-0.8, 0.8, size=(k, 2))
    assignment = rng.integers(0, k, size=n).astype(np.int32)
    positions = (centres[assignment] + rng.standard_normal((n, 2)) * 0.05).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        pictures = []
        for i in range(300):
            path = Path(tmp) / f"t{i}.jpg"
            Image.new("RGB", (320, 240), tuple(int(v) for v in rng.integers(0, 255, 3))).save(path, quality=80)
            pictures.append(path)
        photos = {i: Photo(i, Path(f"/photos/{i:07d}.jpg"), 1, 640, 480, None) for i in range(n)}
        clusters = []
        for c in range(k):
            position, outline = core_outline(positions[assignment == c])
            clusters.append(MapCluster(c + 1, int((assignment == c).sum()), f"subject {c + 1}", 0.5, [(f"subject {c + 1}", 0.5)], [photos[0]], position, outline))
        made = LibraryMap(1, "umap", np.arange(n), positions, assignment, clusters, photos=photos)
        target = Path(tmp) / "map.html"
        began = time.perf_counter()
        render_html.write(made, target, lambda photo: (pictures[photo.id % len(pictures)], None))
        written_s = time.perf_counter() - began
        size_mb = target.stat().st_size / 2**20
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            chromium = browser.launch(playwright)
            page = chromium.new_page(viewport={"width": 1440, "height": 900})
            began = time.perf_counter()
            page.goto(target.as_uri())
            page.wait_for_function("() => window.photosearchMap && window.photosearchMap.drawn > 0")
            open_s = time.perf_counter() - began
            frames = page.evaluate(FRAMES)
            chromium.close()
    return {"n": n, "html_mb": size_mb, "write_s": written_s, "open_s": open_s, **frames}


# Zoom in 40 steps on a cluster, then pan 40 steps: each step one redraw, timed.
FRAMES = """async () => {
  const map = window.photosearchMap.map;
  const box = map.canvas.getBoundingClientRect();
  const next = () => new Promise((done) => requestAnimationFrame(() => done(performance.now())));
  const times = [];
  map.focusCluster(1); // zoom in on a cluster, so points turn into thumbnails on the way
  let most = 0;
  for (let i = 0; i < 80; i++) {
    const start = await next();
    if (i < 40) map.zoomAt(box.width / 2, box.height / 2, 1.08);
    else { map.view.cx += 0.004; map.redraw(); }
    times.push((await next()) - start);
    most = Math.max(most, window.photosearchMap.thumbnails);
  }
  const real = times.slice().sort((a, b) => a - b);
  return { frame_ms_median: real[Math.floor(real.length / 2)], frame_ms_p90: real[Math.floor(real.length * 0.9)],
           most_thumbnails_in_a_frame: most };
}"""


def cpu() -> str:
    import bench as suite

    facts = suite.first_cpu()
    return f"{facts.get('model name', '?')} (family {facts.get('cpu family', '?')} model {facts.get('model', '?')})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draw", type=int, metavar="N", help="instead: the HTML map of N photos in headless Chromium (file size, frame times)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a single size, in this process
    args = parser.parse_args()
    if args.draw:
        print(json.dumps(drawing(args.draw, args.seed)))
        return
    if args.one:
        print(json.dumps(one(args.one, args.seed)))
        return
    import os

    rows = []
    for n in [int(s) for s in args.sizes.split(",") if s]:
        print(f"map of {n} vectors…", file=sys.stderr, flush=True)
        run = subprocess.run([sys.executable, __file__, "--one", str(n), "--seed", str(args.seed)], capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(run.stderr)
        rows.append(json.loads(run.stdout.splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"CPU: {cpu()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}\n")
    print("| vectors | layout | clusters | group (s) | layout (s) | of which placing (s) | total (s) | cached re-open (s) | peak memory (MB) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        place = f"{r['place_s']:.1f}" if "place_s" in r else "—"
        print(f"| {r['n']:,} | {r['method']} | {r['clusters']} | {r['group_s']:.1f} | {r['layout_s']:.1f} | {place} | "
              f"{r['total_s']:.1f} | {r['cache_read_s']:.2f} | {r['peak_mb']:,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
