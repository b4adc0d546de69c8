"""Where the seconds of a short command go: a timeline of a cold text query and of a small
index run, from the interpreter's start to the end, median of fresh processes.

    .venv/bin/python bench/startup_profile.py               # 7 runs of each
    .venv/bin/python bench/startup_profile.py --runs 3 --json

Each run is a fresh `python` that marks the time at points of photosearch's own path (the
functions below are wrapped, nothing else changes) and prints the marks when the command
ends. The index run is bench/small_update.py's case: 20 new 1080p photos into a library of
20 whose cache folder is filled. Baselines in the same table: `python -c pass` (the
interpreter alone), `import numpy`, `photosearch --help`. Uses bench.py's offline model and
corpus. Timings on a busy machine are noisy: "bg CPU" says how busy it was.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402  (bench/ is not a package)

import bench  # noqa: E402

# Runs the CLI with marks at photosearch's steps; prints them as JSON on stderr at the end.
DRIVER = r"""
import os, sys, time, threading, json
T0 = time.perf_counter()
marks = []
def mark(name):
    marks.append((name, time.perf_counter() - T0, threading.current_thread().name))
def wrap(module, name, label):
    real = getattr(module, name)
    def wrapped(*args, **kwargs):
        mark(label + " start")
        try:
            return real(*args, **kwargs)
        finally:
            mark(label + " end")
    setattr(module, name, wrapped)
if __name__ == "__main__":
    import photosearch.cli as cli
    mark("photosearch.cli imported")
    from photosearch import indexer, library, model, query, vectors, workers
    wrap(model, "resolve", "resolve weights")
    wrap(model, "load_image_encoder", "image tower ready")
    wrap(model, "load_text_tower", "text tower opened")
    wrap(query, "text_vector", "text tower run")
    wrap(vectors, "refresh", "search index refresh")
    wrap(vectors, "load", "search index load")
    real_prepared = workers.prepared
    def prepared(*args, **kwargs):
        mark("decode pool start")
        first = True
        for item in real_prepared(*args, **kwargs):
            if first:
                mark("decode: first photo back")
                first = False
            yield item
        mark("decode: last photo back")
    indexer.workers.prepared = prepared
    real_encode = indexer._encode
    def encode(*args, **kwargs):
        out = real_encode(*args, **kwargs)
        mark("a batch encoded")
        return out
    indexer._encode = encode
    _exit = os._exit
    def report(code=0):
        mark("exit")
        print("MARKS=" + json.dumps(marks), file=sys.stderr, flush=True)
        _exit(code)
    os._exit = report
    sys.argv = ["photosearch", *sys.argv[1:]]
    try:
        cli.app()
    except SystemExit:
        pass
    report()
"""


def timeline(cmd_args: list[str], env: dict, runs: int, reset=None) -> dict:
    """{mark: median seconds since start (its first occurrence, or 'last' for the last)},
    plus the wall time, CPU and bg CPU of the runs."""
    driver = Path(tempfile.mkdtemp()) / "driver.py"
    driver.write_text(DRIVER)
    per_mark: dict[str, list[float]] = {}
    walls, cpus, bgs = [], [], []
    for _ in range(runs):
        if reset is not None:
            reset()
        run = bench.measure([sys.executable, driver, *cmd_args], env=env)
        if not run.ok():
            raise SystemExit(f"{cmd_args}: {run.why()}")
        line = next(line for line in run.stderr.splitlines() if line.startswith("MARKS="))
        seen: dict[str, float] = {}
        for name, at, _thread in json.loads(line[len("MARKS="):]):
            if name == "a batch encoded":
                seen["last batch encoded"] = at
                seen.setdefault("first batch encoded", at)
            else:
                seen.setdefault(name, at)
        for name, at in seen.items():
            per_mark.setdefault(name, []).append(at)
        walls.append(run.wall_s)
        cpus.append(run.tree_cpu_s)
        bgs.append(run.bg_cores)
    shutil.rmtree(driver.parent, ignore_errors=True)
    marks = {name: statistics.median(v) for name, v in per_mark.items() if len(v) == runs}
    return {"marks": dict(sorted(marks.items(), key=lambda kv: kv[1])), "wall_s": statistics.median(walls),
            "cpu_s": statistics.median(cpus), "bg_cores": max(bgs)}


def baselines(env: dict, runs: int) -> dict:
    out = {}
    for name, cmd in (("python -c pass (the interpreter alone)", [sys.executable, "-c", "pass"]),
                      ("python -c 'import numpy'", [sys.executable, "-c", "import numpy"]),
                      ("photosearch --help", [bench.PHOTOSEARCH, "--help"])):
        out[name] = statistics.median(bench.measure(cmd, env=env).wall_s for _ in range(runs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--crops", choices=["centre", "letterbox", "mean", "max"], help="how the library cuts photos (default: the product's)")
    args = parser.parse_args()
    models = bench.ensure_models()
    bench.compile_photosearch()
    photos = corpus.ensure(bench.CACHE / "corpus", "1080p", 40, log=bench.log)
    names = sorted(p.name for p in photos.glob("IMG_*.jpg"))
    with tempfile.TemporaryDirectory(dir=bench.CACHE, prefix="startup-") as tmp:
        work = Path(tmp)
        folder, home = work / "photos", work / "home"
        folder.mkdir()
        for name in names[:20]:
            os.link(photos / name, folder / name)
        env = bench.photosearch_env(models, home)
        how = ["--crops", args.crops] if args.crops else []  # the library keeps it: later runs cut the same way
        first = bench.measure([bench.PHOTOSEARCH, "index", folder, "--model", bench.ARCH, "--pretrained", bench.TAG, *how], env=env)
        if not first.ok():
            raise SystemExit(first.why())
        bench.measure([bench.PHOTOSEARCH, "query", "a warm-up", "--json"], env=env)
        saved = work / "saved"
        saved.mkdir()
        for name in ("library.db", "library.db.faiss", "library.db.tiles.faiss"):
            if (home / name).exists():
                shutil.copy2(home / name, saved / name)

        def restore():  # the library as saved: 20 photos, no query cached but the warm-up
            for name in ("library.db", "library.db.faiss", "library.db.tiles.faiss"):
                (home / name).unlink(missing_ok=True)
                if (saved / name).exists():
                    shutil.copy2(saved / name, home / name)

        def with_new_photos():
            restore()
            for name in names[20:]:
                (folder / name).unlink(missing_ok=True)
                os.link(photos / name, folder / name)

        result = {
            "baselines": baselines(env, args.runs),
            # The same text each run, into the restored library: never asked there before.
            "cold query": timeline(["query", "a red bicycle by a wall", "--json"], env, args.runs, restore),
            "small index run": timeline(["index", str(folder)], env, args.runs, with_new_photos),
        }
    cpu = bench.first_cpu()
    result["cpu"] = f"{cpu.get('model name', '?')} (family {cpu.get('cpu family', '?')}, model {cpu.get('model', '?')})"
    if args.json:
        print(json.dumps(result))
        return
    print(f"Start-up timelines, median of {args.runs} fresh processes; {result['cpu']}, {len(os.sched_getaffinity(0))} cores; "
          f"--crops {args.crops or 'as the product defaults'}\n")
    print("| baseline | wall s |\n|---|---|")
    for name, secs in result["baselines"].items():
        print(f"| {name} | {secs:.3f} |")
    for case in ("cold query", "small index run"):
        t = result[case]
        print(f"\n{case}: wall {t['wall_s']:.2f} s, CPU {t['cpu_s']:.2f} s (process tree), bg CPU {t['bg_cores']:.2f}\n")
        print("| mark | s since start |\n|---|---|")
        for name, at in t["marks"].items():
            print(f"| {name} | {at:.3f} |")


if __name__ == "__main__":
    main()
