"""How long a text query takes from a fresh process, and how much memory it uses.

    .venv/bin/python bench/query_latency.py                     # 30 photos, 10 runs of each
    .venv/bin/python bench/query_latency.py --runs 20 --photos 200
    .venv/bin/python bench/query_latency.py --src /tmp/old      # another checkout's photosearch/
    .venv/bin/python bench/query_latency.py --rclip             # and rclip's query, same runs
    .venv/bin/python bench/query_latency.py --compare /tmp/old  # this package and another, alternating

Prints a markdown table on stdout (progress on stderr). Uses bench.py's offline setup: the
random ViT-B-32-256 in .cache/bench/models (the weights rclip runs too) and a cached corpus
folder; nothing is downloaded or regenerated if bench.py made them before.

What each row is:
  * cold text query: `photosearch query TEXT --json` in a fresh process, TEXT never asked
    before in that library (a fresh copy of the library every few runs, so the query cache
    can't help), the text tower already exported by the index run;
  * repeated text query: the same command for a text the library has cached;
  * --help / query --help: start-up alone;
  * serve: a new text query in a warm process (`Library.warm_up` first, as `photosearch
    serve` does), the default 7-phrasing ensemble: median over --serve-queries texts, the
    text tower alone and the whole `Library.search`; each run a fresh process;
  * text tower set-up: the one-time work a first index run does at its end so that text
    queries needn't import torch (today a recipe for the numpy tower; before, the ONNX
    export), timed in a process that has torch imported, as an index run has, into an
    empty cache folder;
  * with --rclip, `rclip -n TEXT` in the photo folder (indexed by one plain query first),
    with the same weights as ONNX files, as bench.py runs it; rclip has no query cache.
Every run is a fresh process started like the `photosearch` console script. Wall time is
the whole command; memory is the peak PSS of the process (its peak RSS in brackets); "bg
CPU" is other processes' CPU use during the runs, in cores: above ~0.1 the machine was not
ours and timings are noisy. Python byte code is cached (in the work folder) as a pip
install would have it, and cold/repeated runs alternate so background load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402  (bench/ is not a package: its modules import from its folder)

import bench  # noqa: E402

# The console script's few lines, plus an optional source tree to take photosearch from
# instead of the installed (editable) one, for before/after comparisons.
LAUNCH = """\
import os, sys
src = os.environ.pop("PHOTOSEARCH_BENCH_SRC", "")
if src:
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
    sys.path.insert(0, src)
sys.argv[0] = "photosearch"
from photosearch.cli import main
sys.exit(main())
"""
SERVE = """\
import json, os, statistics, sys, time
src = os.environ.pop("PHOTOSEARCH_BENCH_SRC", "")
if src:
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
    sys.path.insert(0, src)
import photosearch
from photosearch import query as q
lib = photosearch.Library.open(sys.argv[1])
lib.warm_up()
tower = lib._text_encoder_or_model()
n, run = int(sys.argv[2]), sys.argv[3]  # the run number keeps texts new to the library's cache
tower_ms, search_ms = [], []
for i in range(n):
    texts = q.phrasings(f"photo number {i} of a {('dog', 'beach', 'car', 'tree')[i % 4]}", q.DEFAULT_TEMPLATES)
    t = time.perf_counter(); tower.encode_texts(texts); tower_ms.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter(); lib.search(f"search {run} number {i} of a {('cat', 'sea', 'bus', 'hill')[i % 4]}", k=10)
    search_ms.append((time.perf_counter() - t) * 1000)
print(json.dumps({"tower": type(tower).__name__, "tower_ms": statistics.median(tower_ms), "search_ms": statistics.median(search_ms)}))
"""
SETUP = """\
import json, os, sys, time
src = os.environ.pop("PHOTOSEARCH_BENCH_SRC", "")
if src:
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
    sys.path.insert(0, src)
import torch  # an index run has it loaded when it sets the tower up
from photosearch import model
from photosearch.config import ModelSpec
resolved = model.resolve(ModelSpec(sys.argv[1], sys.argv[2]))
resolved.fingerprint()
t = time.perf_counter()
ok = model.ensure_text_tower(resolved)
print(json.dumps({"ok": ok, "s": time.perf_counter() - t}))
"""
REPEATED = bench.QUERIES[0]
COLD = bench.QUERIES[1:]  # texts the repeated query's library copies have never seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="fresh processes per row (default 10)")
    parser.add_argument("--photos", type=int, default=30, help="library size, 1080p photos (default 30)")
    parser.add_argument("--src", type=Path, help="a folder holding another photosearch/ package to measure instead")
    parser.add_argument("--rclip", action="store_true", help="also time rclip's text query (installs it like bench.py if needed)")
    parser.add_argument(
        "--compare", type=Path,
        help="a folder holding another photosearch/ package: its cold, repeated and serve runs alternate with these, each side with its own library and cache folder",
    )  # fmt: skip
    parser.add_argument("--serve-queries", type=int, default=20, help="new texts per warm process in the serve rows (default 20)")
    args = parser.parse_args()
    os.chdir(bench.REPO)  # bench.py's model paths are relative to the repository
    models = bench.ensure_models()
    folder = corpus.ensure(bench.CACHE / "corpus", "1080p", args.photos, log=bench.log)
    bench.CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=bench.CACHE, prefix="query-latency-") as tmp:
        work = Path(tmp)
        env = bench.photosearch_env(models, work / "home")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        if args.src:
            env["PHOTOSEARCH_BENCH_SRC"] = str(args.src.resolve())
        command = [sys.executable, "-c", LAUNCH]
        master = work / "library" / "library.db"
        master.parent.mkdir()

        bench.log(f"indexing {args.photos} photos of {folder.name} (exports the text tower) ...")
        run = bench.measure([*command, "index", folder, "--model", bench.ARCH, "--pretrained", bench.TAG, "--db", master, "-q"], env=env)
        if not run.ok():
            raise SystemExit(f"index failed: {run.why()}")
        expect = min(10, args.photos)

        sides = {"": (master, env)}
        if args.compare:
            # Indexed by the compared package itself: libraries may differ in schema.
            other = work / "library-compare" / master.name
            other.parent.mkdir()
            other_env = dict(env, PHOTOSEARCH_BENCH_SRC=str(args.compare.resolve()), PHOTOSEARCH_CACHE=str(work / "home" / "cache-compare"))
            bench.log(f"indexing the same photos with {args.compare} ...")
            run = bench.measure([*command, "index", folder, "--model", bench.ARCH, "--pretrained", bench.TAG, "--db", other, "-q"], env=other_env)
            if not run.ok():
                raise SystemExit(f"index with {args.compare} failed: {run.why()}")
            sides[f" ({args.compare})"] = (other, other_env)

        def query(text: str, library: Path, env: dict = env) -> bench.Run:
            run = bench.measure([*command, "query", text, "--db", library, "-k", "10", "--json"], env=env)
            problem = bench.check_query("photosearch", run, expect)
            if problem:
                raise SystemExit(f"query {text!r}: {problem}")
            return run

        # Byte code, page cache, and any one-time upgrade of the library's files land here,
        # in the library every cold run starts from a copy of; the repeated text is cached.
        # (For a compared package, this is where its text tower is set up, as its own query
        # would do it.)
        for side_master, side_env in sides.values():
            query(REPEATED, side_master, side_env)
        copies = 0

        def fresh_copy(master: Path = master) -> Path:
            nonlocal copies
            copies += 1
            target = work / f"copy{copies}"
            shutil.copytree(master.parent, target)
            return target / master.name

        rclip_query = _rclip(models, folder, work, expect) if args.rclip else None
        rows: dict[str, list[bench.Run]] = {}
        for side in sides:
            rows[f"cold text query{side}"], rows[f"repeated text query{side}"] = [], []
        if rclip_query:
            rows["rclip text query"] = []
        # The interpreter's own start-up, in the same rounds (background load varies by the
        # second here): what a query costs above it is what photosearch can still cut.
        baselines = {"python -c pass": "pass", "python -c 'import numpy'": "import numpy"}
        rows.update({name: [] for name in baselines})
        libraries: dict[str, Path] = {}
        for i in range(args.runs):
            for side, (side_master, side_env) in sides.items():
                if i % len(COLD) == 0:
                    libraries[side] = fresh_copy(side_master)
                rows[f"cold text query{side}"].append(query(COLD[i % len(COLD)], libraries[side], side_env))
                rows[f"repeated text query{side}"].append(query(REPEATED, side_master, side_env))
            if rclip_query:
                rows["rclip text query"].append(rclip_query(COLD[i % len(COLD)]))
            for name, code in baselines.items():
                rows[name].append(bench.measure([sys.executable, "-c", code], env=env))
            bench.log(f"run {i + 1}/{args.runs}: " + ", ".join(f"{name} {runs[-1].wall_s:.2f} s" for name, runs in rows.items()))
        for name, argv in (("photosearch --help", ["--help"]), ("photosearch query --help", ["query", "--help"])):
            rows[name] = [bench.measure([*command, *argv], env=env) for _ in range(args.runs)]
        serve: dict[str, list] = {side: [] for side in sides}
        setup: dict[str, list] = {side: [] for side in sides}
        for i in range(max(1, args.runs // 3)):
            for side, (side_master, side_env) in sides.items():
                run = bench.measure([sys.executable, "-c", SERVE, side_master, str(args.serve_queries), str(i)], env=side_env)
                if not run.ok():
                    raise SystemExit(f"serve{side}: {run.why()}")
                serve[side].append((json.loads(run.stdout.strip().splitlines()[-1]), run.bg_cores))
                setup_env = dict(side_env, PHOTOSEARCH_CACHE=str(work / f"setup-cache{len(setup[side])}{'-compare' if side else ''}"))
                run = bench.measure([sys.executable, "-c", SETUP, bench.ARCH, bench.TAG], env=setup_env)
                if not run.ok():
                    raise SystemExit(f"text tower set-up{side}: {run.why()}")
                setup[side].append((json.loads(run.stdout.strip().splitlines()[-1]), run.bg_cores))
                bench.log(f"serve run {i + 1}{side}: {serve[side][-1][0]}; text tower set-up {setup[side][-1][0]}")
    print(report(rows, args, serve, setup))


def _rclip(models: dict, folder: Path, work: Path, expect: int):
    """A function that times one rclip text query, after rclip has indexed `folder`; None
    (with a note on stderr) when rclip can't be had."""
    rclip = bench.ensure_rclip()
    if "bin" not in rclip:
        bench.log(f"rclip: {rclip['error']}")
        return None
    datadir = bench.rclip_datadir(models, work / "rclip-data")

    def query(text: str) -> bench.Run:
        cmd, env, cwd = bench.query_cmd("rclip", text, datadir, models, rclip, folder)
        run = bench.measure(cmd, env=env, cwd=cwd)
        problem = bench.check_query("rclip", run, expect)
        if problem:
            raise SystemExit(f"rclip query {text!r}: {problem}")
        return run

    bench.log("rclip: indexing the folder (a query without -n, as bench.py does) ...")
    run = bench.measure([rclip["bin"], "-f", REPEATED], env=bench.rclip_env(datadir), cwd=folder)
    if not run.ok():
        raise SystemExit(f"rclip index: {run.why()}")
    return query


def cpu_name() -> str:
    """The CPU's model name with its family and model numbers (Zen 4 and Zen 5 share a name)."""
    info = bench.first_cpu()
    return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"


def report(rows: dict[str, list[bench.Run]], args, serve=(), setup=()) -> str:
    machine = bench.machine()
    lines = [
        f"photosearch query latency ({args.src or 'installed'}; {args.photos}-photo library, ViT-B-32-256 random weights, "
        f"{args.runs} fresh processes a row; {cpu_name()}, {machine['cores']} cores, load average {' '.join(machine['loadavg'])})",
        "",
        "| measure | median s | p90 s | min s | CPU s, median | peak memory MB, median (max) | bg CPU, max |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        wall = [r.wall_s for r in runs]
        pss = [r.peak_pss_mb for r in runs]
        rss = [r.max_rss_mb for r in runs]
        lines.append(
            f"| {name} | {bench.median(wall):.2f} | {bench.p90(wall):.2f} | {min(wall):.2f} | {bench.median([r.tree_cpu_s for r in runs]):.2f} | "
            f"{bench.median(pss):.0f} ({max(pss):.0f}); RSS {bench.median(rss):.0f} ({max(rss):.0f}) | {max(r.bg_cores for r in runs):.2f} |"
        )
    lines.append("")
    lines.append("Memory: peak PSS sampled every 0.1 s (short runs may end between samples) and peak RSS from getrusage. "
                 "CPU: the process tree's user + system time (less swayed by other processes than wall time, not immune).")
    if serve:
        lines += [
            "",
            f"Serve (a warm process, new texts, default 7-phrasing ensemble; median of {args.serve_queries} texts a process, "
            f"{len(next(iter(serve.values())))} processes a side, sides alternating):",
            "",
            "| measure | median of processes ms | min ms | max ms | bg CPU, max |",
            "|---|---|---|---|---|",
        ]
        for side, results in serve.items():
            bg = max(b for _, b in results)
            for key, name in (("tower_ms", f"text tower alone ({results[0][0]['tower']}){side}"), ("search_ms", f"Library.search, new text{side}")):
                values = [r[key] for r, _ in results]
                lines.append(f"| {name} | {bench.median(values):.1f} | {min(values):.1f} | {max(values):.1f} | {bg:.2f} |")
    if setup:
        lines += ["", "Text tower set-up, the first index run's one-time cost (torch already imported, empty cache):", ""]
        for side, results in setup.items():
            values = [r["s"] for r, _ in results]
            lines.append(
                f"* {side.strip(' ()') or 'this package'}: median {bench.median(values):.3f} s, min {min(values):.3f}, max {max(values):.3f} "
                f"({len(values)} runs; ok: {all(r['ok'] for r, _ in results)}; bg CPU max {max(b for _, b in results):.2f})"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
