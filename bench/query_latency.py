"""How long a text query takes from a fresh process, and how much memory it uses.

    .venv/bin/python bench/query_latency.py                     # 30 photos, 10 runs of each
    .venv/bin/python bench/query_latency.py --runs 20 --photos 200
    .venv/bin/python bench/query_latency.py --src /tmp/old      # another checkout's photosearch/
    .venv/bin/python bench/query_latency.py --rclip             # and rclip's query, same runs

Prints a markdown table on stdout (progress on stderr). Uses bench.py's offline setup: the
random ViT-B-32-256 in .cache/bench/models (the weights rclip runs too) and a cached corpus
folder; nothing is downloaded or regenerated if bench.py made them before.

What each row is:
  * cold text query: `photosearch query TEXT --json` in a fresh process, TEXT never asked
    before in that library (a fresh copy of the library every few runs, so the query cache
    can't help), the text tower already exported by the index run;
  * repeated text query: the same command for a text the library has cached;
  * --help / query --help: start-up alone;
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
REPEATED = bench.QUERIES[0]
COLD = bench.QUERIES[1:]  # texts the repeated query's library copies have never seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="fresh processes per row (default 10)")
    parser.add_argument("--photos", type=int, default=30, help="library size, 1080p photos (default 30)")
    parser.add_argument("--src", type=Path, help="a folder holding another photosearch/ package to measure instead")
    parser.add_argument("--rclip", action="store_true", help="also time rclip's text query (installs it like bench.py if needed)")
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

        def query(text: str, library: Path) -> bench.Run:
            run = bench.measure([*command, "query", text, "--db", library, "-k", "10", "--json"], env=env)
            problem = bench.check_query("photosearch", run, expect)
            if problem:
                raise SystemExit(f"query {text!r}: {problem}")
            return run

        # Byte code, page cache, and any one-time upgrade of the library's files land here,
        # in the library every cold run starts from a copy of; the repeated text is cached.
        query(REPEATED, master)
        copies = 0

        def fresh_copy() -> Path:
            nonlocal copies
            copies += 1
            target = work / f"copy{copies}"
            shutil.copytree(master.parent, target)
            return target / master.name

        rclip_query = _rclip(models, folder, work, expect) if args.rclip else None
        rows: dict[str, list[bench.Run]] = {"cold text query": [], "repeated text query": []}
        if rclip_query:
            rows["rclip text query"] = []
        library = None
        for i in range(args.runs):
            if i % len(COLD) == 0:
                library = fresh_copy()
            rows["cold text query"].append(query(COLD[i % len(COLD)], library))
            rows["repeated text query"].append(query(REPEATED, master))
            if rclip_query:
                rows["rclip text query"].append(rclip_query(COLD[i % len(COLD)]))
            bench.log(f"run {i + 1}/{args.runs}: " + ", ".join(f"{name} {runs[-1].wall_s:.2f} s" for name, runs in rows.items()))
        for name, argv in (("photosearch --help", ["--help"]), ("photosearch query --help", ["query", "--help"])):
            rows[name] = [bench.measure([*command, *argv], env=env) for _ in range(args.runs)]
    print(report(rows, args))


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


def report(rows: dict[str, list[bench.Run]], args) -> str:
    machine = bench.machine()
    lines = [
        f"photosearch query latency ({args.src or 'installed'}; {args.photos}-photo library, ViT-B-32-256 random weights, "
        f"{args.runs} fresh processes a row; {machine['cores']} cores, load average {' '.join(machine['loadavg'])})",
        "",
        "| measure | median s | p90 s | min s | peak memory MB, median (max) | bg CPU, max |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        wall = [r.wall_s for r in runs]
        pss = [r.peak_pss_mb for r in runs]
        rss = [r.max_rss_mb for r in runs]
        lines.append(
            f"| {name} | {bench.median(wall):.2f} | {bench.p90(wall):.2f} | {min(wall):.2f} | "
            f"{bench.median(pss):.0f} ({max(pss):.0f}); RSS {bench.median(rss):.0f} ({max(rss):.0f}) | {max(r.bg_cores for r in runs):.2f} |"
        )
    lines.append("")
    lines.append("Memory: peak PSS sampled every 0.1 s (short runs may end between samples) and peak RSS from getrusage.")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
