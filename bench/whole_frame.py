"""Whole-frame embeddings: what each way of cutting photos finds, and what it costs.

    .venv/bin/python bench/whole_frame.py              # quality + cost, ~10 min on 2 cores
    .venv/bin/python bench/whole_frame.py --quality    # only the quality table (~2 min)
    .venv/bin/python bench/whole_frame.py --quick      # smoke run: fewer photos, 1 round
    .venv/bin/python bench/whole_frame.py --json       # one JSON object on stdout instead

Prints markdown tables on stdout (progress on stderr); docs/whole-frame.md holds a run.

Quality: the tiny CLIP that our test code trains (tests/support/train.py) on held-out
pictures it never saw (tests/support/framing.py): one shape in a 4:3, 16:9, 3:1 or 9:16
frame with its centre outside the centre square, and squares as the control. For each
`--crops` way, the pictures are indexed into a fresh library with `Library.index(crops=…)`
and measured with `Library.evaluate` (what `photosearch eval --crops …` prints), each frame
on its own: the 16 class names are the queries, with the default prompt ensemble.
  recall@10  the share of a class's pictures (6 a frame, so at most 6) in its top 10
  mAP        mean average precision over the whole ranking

Cost: the random ViT-B-32-256 (bench/models.py) on photo-like JPEGs (bench/corpus.py),
12 MP 4:3 and 1080p 16:9:
  * per photo, one process, CPU ms: the decode worker's job (decode, fingerprint, cut into
    the model's inputs) for each way, the fastest of `--rounds` per photo, the median over
    photos; and the image tower's CPU ms an input (bf16, one thread, batch 32). The
    expected CPU per photo is job + inputs × model, compared with the centre crop's.
  * `photosearch index --crops …` of the mixed corpus (both sets in one folder), fresh
    process, new library: wall time and the process tree's CPU seconds, alternating ways.
  * search: vectors a photo in the index, and one exact search's time over a flat index of
    10 000 photos' worth of entries (numpy, one thread).
Other processes share this machine's cores; "bg CPU" says how much they took. Compare the
ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

CROPS = ("centre", "letterbox", "mean", "max")
FRAMES = ("1:1", "4:3", "16:9", "3:1", "9:16")
SEED = 15_015  # public, so the tiny model never trained on these pictures


def log(text: str) -> None:
    print(f"[whole-frame {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- quality --------------------------------------------------------------------------------


def quality(work: Path, per_class: int) -> dict:
    """{crops: {frame: {"recall@10", "mAP"}}} on the held-out off-centre pictures."""
    import photosearch
    from photosearch.evaluate import load_labels
    from tests.support import framing, train

    model = train.trained_tiny_model()
    folder = work / "framing"
    framing.write_folder(folder, FRAMES, per_class=per_class, seed=SEED)
    labels = load_labels(folder / "labels.json", folder)
    by_frame = {f: {p: v for p, v in labels.items() if framing.frame_of(os.fsdecode(p)) == f} for f in FRAMES}
    out: dict = {}
    for crops in CROPS:
        with photosearch.Library.open(work / f"quality-{crops}.db", model=f"local-dir:{model}") as library:
            library.index(folder, crops=crops)
            out[crops] = {}
            for frame, wanted in by_frame.items():
                ensemble = library.evaluate(wanted)["modes"]["ensemble"]
                out[crops][frame] = {"recall@10": ensemble["found@10"], "mAP": ensemble["mAP"]}
        log(f"quality {crops}: " + ", ".join(f"{f} {m['recall@10']:.3f}" for f, m in out[crops].items()))
    return {"per_class": per_class, "classes": 16, "by_crops": out}


# -- cost -----------------------------------------------------------------------------------


def worker_costs(folder: Path, n: int, rounds: int) -> dict:
    """{crops: {"job_ms", "inputs"}}: the decode worker's CPU ms and model inputs a photo."""
    import bench as suite
    from photosearch import model
    from photosearch.config import requested_model
    from photosearch.scan import PhotoFile
    from photosearch.workers import Prepare, prepare_one

    cut = model.cut_of(model.resolve(requested_model(suite.ARCH, suite.TAG)))
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")[:n]
    best = {c: [float("inf")] * len(files) for c in CROPS}
    inputs = {c: [0] * len(files) for c in CROPS}
    for rnd in range(rounds):
        for i, path in enumerate(files):
            path.read_bytes()  # page cache, as in an index run
            st = path.stat()
            file = PhotoFile(os.fsencode(path), st.st_size, st.st_mtime_ns)
            order = list(CROPS) if (rnd + i) % 2 == 0 else list(reversed(CROPS))
            for crops in order:
                how = Prepare.of(cut.with_crops(crops), None)
                t0 = time.process_time()
                result = prepare_one((file, False, how, "-"))
                best[crops][i] = min(best[crops][i], time.process_time() - t0)
                if result.reason:
                    raise SystemExit(f"{path}: {result.reason}")
                inputs[crops][i] = len(result.pixels)
    return {c: {"job_ms": 1000 * statistics.median(best[c]), "inputs": statistics.fmean(inputs[c])} for c in CROPS}


def index_runs(folder: Path, runs: int, models: dict, work: Path) -> dict:
    """`photosearch index --crops …` of `folder`: {crops: {"wall_s", "cpu_s", "bg"}}."""
    import bench as suite

    home = work / "home"
    env = suite.photosearch_env(models, home)
    count = len([p for p in folder.iterdir() if p.suffix.lower() == ".jpg"])

    def index(db: Path, crops: str):
        cmd = [suite.PHOTOSEARCH, "index", folder, "--model", suite.ARCH, "--pretrained", suite.TAG, "--db", db, "--crops", crops]
        run = suite.measure(cmd, env=env)
        if not run.ok():
            raise SystemExit(f"{' '.join(map(str, cmd))}: {run.why()}")
        return run

    log("index: warm-up run (one-time per-model work) ...")
    index(work / "warm.db", "centre")
    got: dict[str, list] = {c: [] for c in CROPS}
    for attempt in range(runs):
        for crops in CROPS if attempt % 2 == 0 else tuple(reversed(CROPS)):
            run = index(work / f"index-{crops}-{attempt}.db", crops)
            got[crops].append(run)
            log(f"index --crops {crops}: {run.wall_s:.1f} s, CPU {run.tree_cpu_s:.1f} s, bg CPU {run.bg_cores:.2f}")
    return {
        c: {
            "photos": count,
            "wall_s": statistics.median(r.wall_s for r in runs_),
            "cpu_ms": 1000 * statistics.median(r.tree_cpu_s for r in runs_) / count,
            "bg_cores": max(r.bg_cores for r in runs_),
        }
        for c, runs_ in got.items()
    }


def search_ms(entries_per_photo: float, photos: int = 10_000, dim: int = 512, repeats: int = 50) -> float:
    """One exact search's wall ms over a flat index of `photos` × `entries_per_photo` entries."""
    import numpy as np

    from photosearch import vectors

    rng = np.random.default_rng(0)
    n = int(round(photos * entries_per_photo))
    matrix = rng.standard_normal((n, dim), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    index = vectors.build_from(np.arange(n), matrix, dim)
    query = matrix[:1]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        index.search(query, 80)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def cost(work: Path, n: int, rounds: int, runs: int) -> dict:
    import corpus
    from thumbnails import model_core_ms

    import bench as suite

    models = suite.ensure_models()
    os.environ.update(suite.photosearch_env(models, work / "home"))  # where the random weights are
    sets = {name: corpus.ensure(suite.CACHE / "corpus", name, n, log=log) for name in ("12mp", "1080p")}
    per_photo = {}
    for name, folder in sets.items():
        log(f"worker jobs, {name} ...")
        per_photo[name] = worker_costs(folder, n, rounds)
    model_ms = model_core_ms(5)
    mixed = work / "mixed"
    mixed.mkdir()
    for name, folder in sets.items():
        for path in sorted(folder.glob("*.jpg"))[:n]:
            os.link(path, mixed / f"{name}-{path.name}")
    return {
        "per_photo": per_photo,
        "model_core_ms": model_ms,
        "index": index_runs(mixed, runs, models, work),
        "search_ms_10k": {c: search_ms(per_photo["1080p"][c]["inputs"] if c == "max" else 1.0) for c in CROPS},
    }


# -- report ---------------------------------------------------------------------------------


def report_lines(result: dict) -> list[str]:
    lines: list[str] = []
    q = result.get("quality")
    if q:
        lines += [
            "## Whole-frame embeddings: what each way finds",
            "",
            f"The trained tiny CLIP, held-out pictures ({q['per_class']} per class and frame, {q['classes']} classes); the shape's "
            "centre outside the centre square in every frame but 1:1. recall@10: the share of a class's pictures in its top 10. "
            "mAP over the whole ranking. Default prompt ensemble.",
            "",
            "| --crops | " + " | ".join(f"{f} recall@10 / mAP" for f in FRAMES) + " | off-centre mean recall@10 |",
            "|---|" + "---|" * (len(FRAMES) + 1),
        ]
        for crops, frames in q["by_crops"].items():
            off = statistics.fmean(frames[f]["recall@10"] for f in FRAMES if f != "1:1")
            lines.append(f"| {crops} | " + " | ".join(f"{frames[f]['recall@10']:.3f} / {frames[f]['mAP']:.3f}" for f in FRAMES)
                         + f" | {off:.3f} |")
        lines.append("")
    c = result.get("cost")
    if c:
        model_ms = c["model_core_ms"]
        lines += [
            "## What each way costs",
            "",
            f"Random ViT-B-32-256; its image tower takes {model_ms:.1f} CPU-ms an input (bf16, one thread, batch 32). "
            "Worker job: decode, fingerprint and cut, CPU ms a photo (median over photos of each one's fastest round). "
            "Expected: job + inputs × model, against the centre crop's.",
            "",
            "| corpus | --crops | model inputs a photo | worker job, ms | expected CPU ms a photo | × centre |",
            "|---|---|---|---|---|---|",
        ]
        for name, ways in c["per_photo"].items():
            base = ways["centre"]["job_ms"] + ways["centre"]["inputs"] * model_ms
            for crops, w in ways.items():
                expected = w["job_ms"] + w["inputs"] * model_ms
                lines.append(f"| {name} | {crops} | {w['inputs']:.2f} | {w['job_ms']:.1f} | {expected:.1f} | {expected / base:.2f}× |")
        lines.append("")
        idx = c["index"]
        base = idx["centre"]
        lines += [
            f"`photosearch index --crops …` of both corpora in one folder ({base['photos']} photos), fresh process, new library, "
            "median of the runs (alternating):",
            "",
            "| --crops | wall s | × centre | CPU ms a photo (process tree) | × centre | search entries a photo | exact search, 10 000 photos, ms | bg CPU |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for crops, r in idx.items():
            entries = c["per_photo"]["1080p"][crops]["inputs"] if crops == "max" else 1.0
            lines.append(f"| {crops} | {r['wall_s']:.1f} | {r['wall_s'] / base['wall_s']:.2f}× | {r['cpu_ms']:.0f} | "
                         f"{r['cpu_ms'] / base['cpu_ms']:.2f}× | {entries:.2f} | {c['search_ms_10k'][crops]:.2f} | {r['bg_cores']:.2f} |")
        lines.append("")
    return lines


def cpu_kind() -> str:
    """CPU family and model, and whether it has AMX: "AMD EPYC" alone doesn't say Zen 4 or 5."""
    import bench as suite

    facts = suite.first_cpu()
    amx = ", AMX" if "amx_bf16" in facts.get("flags", "").split() else ""
    return f"family {facts.get('cpu family', '?')} model {facts.get('model', '?')}{amx}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quality", action="store_true", help="only the quality table")
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer photos, one round")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    import bench as suite

    result: dict = {"machine": suite.machine()}
    with tempfile.TemporaryDirectory(prefix="ps-whole-frame-") as tmp:
        work = Path(tmp)
        result["quality"] = quality(work, per_class=3 if args.quick else 6)
        if not args.quality:
            result["cost"] = cost(work, n=8 if args.quick else 40, rounds=1 if args.quick else 3, runs=1 if args.quick else 2)
    if args.json:
        print(json.dumps(result))
        return
    m = result["machine"]
    print(f"Machine: {m.get('cpu', '?')} ({cpu_kind()}), {m.get('cores', '?')} cores; {time.strftime('%Y-%m-%d')}\n")
    print("\n".join(report_lines(result)))


if __name__ == "__main__":
    main()
