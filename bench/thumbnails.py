"""What thumbnails cost: made by the index run's decode workers, or on first request.

    .venv/bin/python bench/thumbnails.py                 # 60 × 12 MP + 60 × 1080p, 3 runs
    .venv/bin/python bench/thumbnails.py --quick         # smoke run: 10 photos timed, 1 run
    .venv/bin/python bench/thumbnails.py --json          # one JSON object on stdout instead

Prints a markdown table on stdout (progress on stderr). Two parts:

  * per photo, in one process, CPU ms (files in the page cache; each photo timed in every
    round, its fastest round kept, the median over photos reported):
      - the worker's job without a thumbnail (decode at ≥ 2× the 256 px model input,
        fingerprint, cut to model input), and with one (the same, plus scaling the decode
        it holds to 320 px and writing the JPEG): the difference is what `--thumbnails`
        adds to indexing;
      - a thumbnail on first request (`thumbnails.thumbnail`: stat, fingerprint check of
        the open file, a decode of its own, scale, write), and a cached one (stat + lookup);
  * index throughput: `photosearch index FOLDER` with and without `--thumbnails`, random
    ViT-B-32-256 (bench/models.py), each a fresh process into a new library in a home whose
    one-time work is done, with the thumbnails folder emptied first; the two alternate, and
    the median of `--runs` is reported. Then `index --thumbnails` on the library indexed
    without them: the pass that fills in thumbnails of unchanged photos.

Other processes share this machine's cores; the "bg CPU" column says how much they took (in
cores) while a command ran. Compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import corpus  # noqa: E402

import bench as suite  # noqa: E402  (bench/bench.py: measure(), the models, the corpus)

MODEL_INPUT = 256  # ViT-B-32-256's


def log(text: str) -> None:
    print(f"[thumbnails {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def per_photo_costs(folder: Path, n: int, rounds: int, work: Path) -> dict:
    """CPU ms per photo of each way to make (or find) a thumbnail; see the module's doc."""
    from photosearch import thumbnails
    from photosearch.scan import PhotoFile, content_fingerprint
    from photosearch.workers import Prepare, prepare_one

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")[:n]
    kinds = ("worker", "worker_thumbnail", "request", "cached")
    best: dict[str, list[float]] = {k: [float("inf")] * len(files) for k in kinds}
    sizes: list[int] = []
    for rnd in range(rounds):
        for i, path in enumerate(files):
            path.read_bytes()  # page cache, as in an index run
            st = path.stat()
            file = PhotoFile(os.fsencode(path), st.st_size, st.st_mtime_ns)
            facts = thumbnails.FileFacts(i, file.path, st.st_size, st.st_mtime_ns, content_fingerprint(path))
            out = work / f"r{rnd}-{i}"  # a fresh folder: every timing makes its thumbnail
            order = [("worker", None), ("worker_thumbnail", out / "w")]
            if (rnd + i) % 2:  # alternate which goes first: caches warm for both alike
                order.reverse()
            for kind, where in order:
                how = Prepare(size=MODEL_INPUT, thumbnails=str(where) if where else None)
                t0 = time.process_time()
                result = prepare_one((file, False, how, None))
                best[kind][i] = min(best[kind][i], time.process_time() - t0)
                if result.reason or result.thumbnail_error:
                    raise SystemExit(f"{path}: {result.reason or result.thumbnail_error}")
            t0 = time.process_time()
            made = thumbnails.thumbnail(facts, folder=out / "r")
            best["request"][i] = min(best["request"][i], time.process_time() - t0)
            t0 = time.perf_counter()  # wall: a cached one is a stat and a lookup
            thumbnails.thumbnail(facts, folder=out / "r")
            best["cached"][i] = min(best["cached"][i], time.perf_counter() - t0)
            if rnd == 0:
                sizes.append(made.stat().st_size)
            shutil.rmtree(out)
    ms = {k: 1000 * statistics.median(v) for k, v in best.items()}
    extra = [w - p for w, p in zip(best["worker_thumbnail"], best["worker"], strict=True)]
    return {
        "n": len(files),
        "rounds": rounds,
        "worker_ms": ms["worker"],
        "worker_thumbnail_ms": ms["worker_thumbnail"],
        "worker_extra_ms": 1000 * statistics.median(extra),
        "request_ms": ms["request"],
        "cached_ms": ms["cached"],
        "thumbnail_kb": statistics.fmean(sizes) / 1024,
    }


def model_core_ms(repeats: int) -> float:
    """CPU ms per image of the random ViT-B-32-256's image tower in bfloat16 on one thread
    (batch 32, the fastest of `repeats`), in a fresh process: CPU time, not wall time, so
    other processes on the machine don't inflate it."""
    import subprocess

    code = (
        "import sys, time, torch\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from models import create_model\n"
        "torch.set_num_threads(1)\n"
        "visual = create_model().visual.eval().to(torch.bfloat16)\n"
        f"x = torch.randn(32, 3, {MODEL_INPUT}, {MODEL_INPUT}).to(torch.bfloat16)\n"
        "best = float('inf')\n"
        "with torch.inference_mode():\n"
        "    visual(x)\n"
        f"    for _ in range({repeats}):\n"
        "        t0 = time.process_time()\n"
        "        visual(x)\n"
        "        best = min(best, time.process_time() - t0)\n"
        "print(1000 * best / 32)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=suite.base_env(), capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def index_throughput(folder: Path, runs: int, models: dict, work: Path) -> dict:
    """photos/s of `photosearch index` with and without `--thumbnails`; see the module's doc."""
    home = work / f"home-{folder.name}"
    env = suite.photosearch_env(models, home)
    thumbs = home / "cache" / "thumbnails"
    count = len([p for p in folder.iterdir() if p.suffix.lower() == ".jpg"])

    def index(db: Path, *extra: str):
        cmd = [suite.PHOTOSEARCH, "index", folder, "--model", suite.ARCH, "--pretrained", suite.TAG, "--db", db, *extra]
        run = suite.measure(cmd, env=env)
        if not run.ok():
            raise SystemExit(f"{' '.join(map(str, cmd))}: {run.why()}")
        return run

    log(f"{folder.name}: warm-up run (one-time per-model work) ...")
    index(work / f"warm-{folder.name}.db")
    got: dict[str, list] = {"plain": [], "thumbnails": []}
    for attempt in range(runs):
        order = ["plain", "thumbnails"] if attempt % 2 == 0 else ["thumbnails", "plain"]
        for kind in order:
            shutil.rmtree(thumbs, ignore_errors=True)
            db = work / f"{kind}-{attempt}-{folder.name}.db"
            run = index(db, *(["--thumbnails"] if kind == "thumbnails" else []))
            if kind == "thumbnails":
                made = len(list(thumbs.glob("*/*.jpg")))
                if made != count:
                    raise SystemExit(f"{folder.name}: index --thumbnails made {made} thumbnails of {count}")
            got[kind].append(run)
            log(f"{folder.name} {kind}: {count / run.wall_s:.2f} photos/s ({run.wall_s:.1f} s, bg CPU {run.bg_cores:.2f})")
    # The library indexed without thumbnails, unchanged: `index --thumbnails` fills them in.
    shutil.rmtree(thumbs, ignore_errors=True)
    fill = index(work / f"plain-0-{folder.name}.db", "--thumbnails")
    log(f"{folder.name} fill-in pass: {count / fill.wall_s:.2f} photos/s ({fill.wall_s:.1f} s)")

    def mid(kind):
        return sorted(got[kind], key=lambda r: r.wall_s)[len(got[kind]) // 2]

    plain, thumbed = mid("plain"), mid("thumbnails")
    # Each attempt ran the two kinds back to back: their ratio saw the most similar background
    # load, so the median of those ratios is the steadiest measure of the cost.
    paired = [p.wall_s / t.wall_s for p, t in zip(got["plain"], got["thumbnails"], strict=True)]
    return {
        "paired_speed_ratio": statistics.median(paired),
        "paired_ratios": paired,
        "best_plain_photos_s": count / min(r.wall_s for r in got["plain"]),
        "best_thumbnails_photos_s": count / min(r.wall_s for r in got["thumbnails"]),
        "bg_cores_each": {k: [r.bg_cores for r in v] for k, v in got.items()},
        "n": count,
        "runs": runs,
        "plain_photos_s": count / plain.wall_s,
        "thumbnails_photos_s": count / thumbed.wall_s,
        "plain_walls": [r.wall_s for r in got["plain"]],
        "thumbnails_walls": [r.wall_s for r in got["thumbnails"]],
        "fill_photos_s": count / fill.wall_s,
        # CPU core-ms per photo, whole process tree: steadier than wall time when other
        # processes share the cores (they slow the wall clock, not what the work costs).
        "plain_cpu_ms": 1000 * statistics.median(r.tree_cpu_s for r in got["plain"]) / count,
        "thumbnails_cpu_ms": 1000 * statistics.median(r.tree_cpu_s for r in got["thumbnails"]) / count,
        "fill_cpu_ms": 1000 * fill.tree_cpu_s / count,
        "bg_cores": max(r.bg_cores for r in got["plain"] + got["thumbnails"] + [fill]),
        "peak_pss_mb": {"plain": plain.peak_pss_mb, "thumbnails": thumbed.peak_pss_mb},
    }


def report_lines(result: dict) -> list[str]:
    """The markdown tables (bench.py puts them in its report too)."""
    cost, speed = result.get("per_photo", {}), result.get("index", {})
    lines = ["## Thumbnails: in the index run's workers vs on first request", ""]
    if cost:
        lines.append("Per photo, one process, CPU ms (median over photos of each photo's fastest of "
                     f"{next(iter(cost.values())).get('rounds', '?')} rounds; files in the page cache):")
        lines.append("")
        model_ms = result.get("model_core_ms")
        lines.append("| corpus | photos | worker job | worker job + thumbnail | ⇒ thumbnail in the worker | thumbnail on first request | "
                     "request ÷ worker | cached (wall ms) | thumbnail KB | ⇒ index cost, CPU-bound / decode-bound |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for name, c in cost.items():
            ratio = c["request_ms"] / c["worker_extra_ms"] if c["worker_extra_ms"] > 0 else float("nan")
            cpu_bound = f"{c['worker_extra_ms'] / (c['worker_ms'] + model_ms):.0%}" if model_ms else "-"
            lines.append(f"| {name} | {c['n']} | {c['worker_ms']:.1f} | {c['worker_thumbnail_ms']:.1f} | {c['worker_extra_ms']:.1f} | "
                         f"{c['request_ms']:.1f} | {ratio:.1f}× | {c['cached_ms']:.2f} | {c['thumbnail_kb']:.0f} | "
                         f"{cpu_bound} / {c['worker_extra_ms'] / c['worker_ms']:.0%} |")
        lines.append("")
        if model_ms:
            lines.append(f"Index cost, expected from these: CPU-bound, decoding and the model ({model_ms:.1f} CPU-ms an image, bf16, "
                         "measured here) share the cores, so `--thumbnails` takes thumbnail ÷ (worker job + model) of the rate; "
                         "decode-bound (the model on a GPU), thumbnail ÷ worker job.")
            lines.append("")
    if speed:
        lines.append("`photosearch index`, random ViT-B-32-256, fresh process, new library, one-time work done "
                     f"(median of {next(iter(speed.values())).get('runs', '?')}, alternating):")
        lines.append("")
        lines.append("| corpus | photos | photos/s without (best) | photos/s with `--thumbnails` (best) | cost: paired / medians / bests | "
                     "CPU core-ms/photo without / with | fill-in pass on the unchanged library: photos/s, core-ms/photo | bg CPU |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, s in speed.items():
            paired = 1 - s.get("paired_speed_ratio", float("nan"))
            medians = 1 - s["thumbnails_photos_s"] / s["plain_photos_s"]
            bests = 1 - s.get("best_thumbnails_photos_s", float("nan")) / s.get("best_plain_photos_s", float("nan"))
            lines.append(f"| {name} | {s['n']} | {s['plain_photos_s']:.2f} ({s.get('best_plain_photos_s', float('nan')):.2f}) | "
                         f"{s['thumbnails_photos_s']:.2f} ({s.get('best_thumbnails_photos_s', float('nan')):.2f}) | "
                         f"{paired:+.0%} / {medians:+.0%} / {bests:+.0%} | {s['plain_cpu_ms']:.0f} / {s['thumbnails_cpu_ms']:.0f} | "
                         f"{s['fill_photos_s']:.1f}, {s['fill_cpu_ms']:.0f} | {s['bg_cores']:.2f} |")
        lines.append("")
        lines.append("photos/s: the median run (the best in brackets). cost: how much slower `--thumbnails` indexed, from the median "
                     "of each attempt's back-to-back pair (the steadiest when other processes come and go), the medians, the bests; "
                     "negative: faster, i.e. noise. CPU: the whole process tree's core-ms per photo (torch's threads spin while "
                     "they wait, so on a busy machine this grows with wall time). bg CPU: the most other processes took during a run, "
                     "in cores; above ~0.1 the rates are noisy. Fill-in pass: `index --thumbnails` on a library indexed without them "
                     "(a decode per photo, in the workers; no model).")
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 photos timed per corpus, 1 index run of 30 photos each")
    parser.add_argument("--n", type=int, help="photos per corpus (default 60; --quick 30)")
    parser.add_argument("--timed", type=int, help="photos timed one by one per corpus (default 30; --quick 10)")
    parser.add_argument("--runs", type=int, help="index runs of each kind (default 3; --quick 1)")
    parser.add_argument("--folder", action="append", default=[], metavar="NAME=DIR",
                        help="use this folder of JPEGs as corpus NAME (repeatable; default: the bench corpora)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: per-photo,index")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
    args = parser.parse_args()
    n = args.n or (30 if args.quick else 60)
    timed = args.timed or (10 if args.quick else 30)
    runs = args.runs or (1 if args.quick else 3)
    skip = set(filter(None, args.skip.split(",")))
    if args.folder:
        folders = {name: Path(path) for name, path in (f.split("=", 1) for f in args.folder)}
    else:
        folders = {name: corpus.ensure(suite.CACHE / "corpus", name, n, log=log) for name in ("12mp", "1080p")}
    result: dict = {"machine": suite.machine(), "per_photo": {}, "index": {}}
    suite.CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=suite.CACHE, prefix="thumbs-") as tmp:
        work = Path(tmp)
        if "per-photo" not in skip:
            for name, folder in folders.items():
                log(f"{name}: per photo costs, {timed} photos ...")
                result["per_photo"][name] = per_photo_costs(folder, timed, 2 if args.quick else 3, work)
            log("the model's CPU cost per image ...")
            result["model_core_ms"] = model_core_ms(2 if args.quick else 5)
        if "index" not in skip:
            models = suite.ensure_models()
            for name, folder in folders.items():
                result["index"][name] = index_throughput(folder, runs, models, work)
    if args.json:
        print(json.dumps(result))
    else:
        m = result["machine"]
        print(f"machine: {m['cpu']}, {m['cores']} cores\n")
        print("\n".join(report_lines(result)))


if __name__ == "__main__":
    main()
