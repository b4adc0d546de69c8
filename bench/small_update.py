"""A small update: N new 1080p photos into a library that exists, start-up included.

    .venv/bin/python bench/small_update.py                  # N = 20, 5 runs each way
    .venv/bin/python bench/small_update.py --new 8,20,32,48 --runs 3 --no-rclip
    .venv/bin/python bench/small_update.py --json           # for bench.py

"I copied today's 20 photos in; index them" is the most common run there is. Each run here
restores a library of --base photos (indexed once, its cache folder filled: not a first run
on the machine), links N new photos into its folder and times one fresh `photosearch index`
of the folder. Two photosearch rows, alternating: as shipped (a run of up to
model.SMALL_RUN_PHOTOS photos uses the image tower in ONNX Runtime), and with
PHOTOSEARCH_SMALL_RUN=0 (always torch, as before). With rclip (bench.py's venv and the same
random ViT-B-32-256 weights as ONNX files), `rclip -f "a dog"` in the same folder, its
database restored the same way: rclip updates its index before every query, so its row
includes one query and its start-up.

Prints a markdown table (progress on stderr); "bg CPU" is other processes' CPU use during
the runs, in cores (above ~0.1 the machine was not ours and timings are noisy); CPU is the
whole process tree's.
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

import corpus  # noqa: E402  (bench/ is not a package)

import bench  # noqa: E402

LIBRARY_FILES = ("library.db", "library.db.faiss", "library.db.tiles.faiss")


def _link(src: Path, names: list[str], into: Path) -> None:
    for name in names:
        os.link(src / name, into / name)


def _unlink(names: list[str], folder: Path) -> None:
    for name in names:
        (folder / name).unlink(missing_ok=True)


def measure_ways(n_new: int, base: int, runs: int, rclip: dict, models: dict, work: Path, crops: str | None = None) -> dict:
    """{way: [Run]} for N = n_new new photos, ways alternating within each round."""
    photos = corpus.ensure(bench.CACHE / "corpus", "1080p", base + n_new, log=bench.log)
    names = sorted(p.name for p in photos.glob("IMG_*.jpg"))
    old, new = names[:base], names[base:]
    folder = work / f"photos-{n_new}"
    folder.mkdir()
    _link(photos, old, folder)
    home = work / f"home-{n_new}"
    env = bench.photosearch_env(models, home)
    how = ["--crops", crops] if crops else []  # a library keeps its way of cutting photos: the runs below use it too
    setup = bench.measure([bench.PHOTOSEARCH, "index", folder, "--model", bench.ARCH, "--pretrained", bench.TAG, *how], env=env)
    if not setup.ok():
        raise SystemExit(f"indexing the base library failed: {setup.why()}")
    saved = work / f"saved-{n_new}"
    saved.mkdir()
    for name in LIBRARY_FILES:
        if (home / name).exists():
            shutil.copy2(home / name, saved / name)
    ways: dict[str, tuple[list, dict, Path | None]] = {
        "photosearch": ([bench.PHOTOSEARCH, "index", folder], env, None),
        "photosearch, torch always": ([bench.PHOTOSEARCH, "index", folder], dict(env, PHOTOSEARCH_SMALL_RUN="0"), None),
    }
    rclip_dir = None
    if "bin" in rclip:
        rclip_dir = bench.rclip_datadir(models, work / f"rclip-{n_new}")
        first = bench.measure([rclip["bin"], "-f", bench.QUERIES[0]], env=bench.rclip_env(rclip_dir), cwd=folder)
        if not first.ok():
            raise SystemExit(f"rclip's first run failed: {first.why()}")
        shutil.copy2(rclip_dir / "db.sqlite3", saved / "rclip.sqlite3")
        ways["rclip"] = ([rclip["bin"], "-f", bench.QUERIES[0]], bench.rclip_env(rclip_dir), folder)
    out: dict[str, list] = {way: [] for way in ways}
    for attempt in range(runs):
        order = list(ways) if attempt % 2 == 0 else list(ways)[::-1]
        for way in order:
            cmd, way_env, cwd = ways[way]
            for name in LIBRARY_FILES:  # the library as it was before the new photos
                (home / name).unlink(missing_ok=True)
                if (saved / name).exists():
                    shutil.copy2(saved / name, home / name)
            if rclip_dir is not None:
                shutil.copy2(saved / "rclip.sqlite3", rclip_dir / "db.sqlite3")
            _link(photos, new, folder)
            run = bench.measure(cmd, env=way_env, cwd=cwd)
            _unlink(new, folder)
            if not run.ok():
                raise SystemExit(f"{way}: {run.why()}")
            if way.startswith("photosearch") and bench.count_added(run) != n_new:
                raise SystemExit(f"{way}: added {bench.count_added(run)} of {n_new} photos")
            out[way].append(run)
            bench.log(f"N={n_new} {way}: {run.wall_s:.2f} s (CPU {run.tree_cpu_s:.2f} s, bg CPU {run.bg_cores:.2f})")
    return out


def summary(results: dict[int, dict[str, list]]) -> dict:
    table = {}
    for n, ways in results.items():
        table[n] = {
            way: {
                "wall_s": bench.median([r.wall_s for r in runs]),
                "walls": [round(r.wall_s, 3) for r in runs],
                "cpu_s": bench.median([r.tree_cpu_s for r in runs]),
                "bg_cores": max(r.bg_cores for r in runs),
                "peak_pss_mb": max(r.peak_pss_mb for r in runs),
            }
            for way, runs in ways.items()
        }
    return table


def markdown(table: dict, runs: int, base: int, crops: str | None = None) -> str:
    cpu = bench.first_cpu()
    lines = [
        f"Small updates: N new 1080p photos into a library of {base} (cache folder filled; --crops {crops or 'as the product defaults'}), "
        f"median of {runs} fresh processes each; {cpu.get('model name', '?')} (family {cpu.get('cpu family', '?')}, "
        f"model {cpu.get('model', '?')}), {len(os.sched_getaffinity(0))} cores",
        "",
        "| N new | way | wall s | CPU s (process tree) | peak memory MB | bg CPU |",
        "|---|---|---|---|---|---|",
    ]
    for n, ways in table.items():
        for way, row in ways.items():
            lines.append(f"| {n} | {way} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | {row['peak_pss_mb']:.0f} | {row['bg_cores']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new", default="20", help="comma list of N (new photos per run; default 20)")
    parser.add_argument("--base", type=int, default=20, help="photos already in the library (default 20)")
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per way and N (default 5)")
    parser.add_argument("--no-rclip", action="store_true", help="photosearch only")
    parser.add_argument("--json", action="store_true", help="print JSON (for bench.py)")
    parser.add_argument("--crops", choices=["centre", "letterbox", "mean", "max"], help="how the library cuts photos (default: the product's, max: 2 model inputs a 1080p photo; centre: 1)")
    args = parser.parse_args()
    models = bench.ensure_models()
    bench.compile_photosearch()
    rclip = {"error": "skipped"} if args.no_rclip else bench.ensure_rclip()
    if "error" in rclip and not args.no_rclip:
        bench.log(f"rclip: not run: {rclip['error']}")
    bench.CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=bench.CACHE, prefix="small-update-") as tmp:
        results = {int(n): measure_ways(int(n), args.base, args.runs, rclip, models, Path(tmp), args.crops) for n in args.new.split(",")}
    table = summary(results)
    if args.json:
        print(json.dumps({"table": table, "runs": args.runs, "base": args.base, "crops": args.crops, "rclip": rclip.get("version") or rclip.get("error")}))
    else:
        print(markdown(table, args.runs, args.base, args.crops))


if __name__ == "__main__":
    main()
