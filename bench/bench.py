"""photosearch vs rclip on this machine: indexing, re-indexing, cold queries, memory, search.

    make bench                                   # defaults: 200 × 12 MP + 200 × 1080p
    make bench BENCH_ARGS=--quick                # smoke run: 30 + 30 photos, fewer repeats
    .venv/bin/python bench/bench.py --n12mp 100 --n1080p 100 --query-runs 5

Prints one markdown report on stdout (progress goes to stderr) and keeps a copy, with the raw
numbers as JSON, in .cache/bench/results/.

Everything runs offline. Under .cache/bench/ it creates, once, and reuses:
  corpus/        photo-like JPEGs (bench/corpus.py), deterministic
  models/        one random ViT-B-32-256 (seed 0) as photosearch's HF cache and rclip's
                 ONNX data dir (bench/models.py): both tools run the same weights
  rclip-venv/    rclip 4.x from PyPI under Python >= 3.12 (pyenv's)
  pylib/         `onnx` for the ONNX export, outside the project's venv

How each number is taken:
  * every command is a fresh process; wall time is the whole command (start-up included)
  * photosearch runs with PHOTOSEARCH_HOME/PHOTOSEARCH_CACHE in a fresh folder per library
    (a new user's state; nothing lands in the real ~/.cache/photosearch), rclip with a fresh
    RCLIP_DATADIR per library; both offline (HF_HUB_OFFLINE=1)
  * memory: the peak of the summed PSS of the command's process tree (sampled every 0.25 s;
    PSS splits shared pages, so worker processes are not double counted), and the largest
    single process's peak RSS (getrusage)
  * "bg CPU": CPU time used by *other* processes on the machine while the command ran,
    in cores (0 = the machine was ours). Other people's tests make timings noisy; this
    column says when.
  * rclip has no index-only command: it updates the index of the current folder before
    every query. Its index rows are `rclip -f "a dog"` in a folder it hasn't seen (so they
    include one text query, ~1 s of its start-up); its re-index rows are the same command
    again. photosearch's are `photosearch index`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402  (bench/ is not a package)

CACHE = REPO / ".cache" / "bench"
VENV_BIN = Path(sys.executable).parent
PHOTOSEARCH = VENV_BIN / "photosearch"
RCLIP_VENV = CACHE / "rclip-venv"
RCLIP_REQUIREMENT = "rclip>=4,<5"
ARCH, TAG = "ViT-B-32-256", "datacomp_s34b_b86k"
QUERIES = [
    "a dog",
    "a red bicycle",
    "sunset over the sea",
    "a birthday cake",
    "snowy mountains",
    "a cat sleeping on a sofa",
    "people at a wedding",
    "a plate of pasta",
    "a city street at night",
    "a child playing football",
]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- measuring one command -------------------------------------------------------------------


@dataclass
class Run:
    cmd: list[str]
    rc: int
    wall_s: float
    peak_pss_mb: float  # summed over the process tree
    max_rss_mb: float  # the largest single process
    tree_cpu_s: float
    bg_cores: float  # other processes' CPU use while this ran, in cores
    stdout: str = ""
    stderr: str = ""

    def ok(self) -> bool:
        return self.rc == 0

    def why(self) -> str:
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        return f"rc={self.rc}: {lines[-1][:160] if lines else 'no message'}"


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime ticks) for every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _busy_ticks() -> int:
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    values = [int(v) for v in parts]
    # user nice system idle iowait irq softirq steal ...
    return values[0] + values[1] + values[2] + values[5] + values[6] + values[7]


class _Sampler(threading.Thread):
    def __init__(self, root: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.stop = threading.Event()
        self.peak_pss_kb = 0
        self.cpu_ticks: dict[int, int] = {}  # last seen CPU ticks of each process in the tree

    def run(self) -> None:
        while True:
            table = _proc_table()
            children: dict[int, list[int]] = {}
            for pid, (ppid, _) in table.items():
                children.setdefault(ppid, []).append(pid)
            tree, todo = [], [self.root]
            while todo:
                pid = todo.pop()
                if pid in table:
                    tree.append(pid)
                    todo.extend(children.get(pid, ()))
            for pid in tree:
                self.cpu_ticks[pid] = max(self.cpu_ticks.get(pid, 0), table[pid][1])
            self.peak_pss_kb = max(self.peak_pss_kb, sum(_pss_kb(pid) for pid in tree))
            if self.stop.wait(self.interval):
                return


def measure(cmd: list[str], *, env: dict[str, str], cwd: Path | None = None, timeout: float = 1800) -> Run:
    me_before = sum(os.times()[:2])
    busy_before = _busy_ticks()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd)
        sampler = _Sampler(proc.pid)
        sampler.start()
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop.set()
        sampler.join()
        busy = (_busy_ticks() - busy_before) / CLK_TCK
        me = sum(os.times()[:2]) - me_before
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    tree_cpu = max(sum(sampler.cpu_ticks.values()) / CLK_TCK, usage.ru_utime + usage.ru_stime)
    bg = max(0.0, busy - tree_cpu - me) / wall if wall > 0 else 0.0
    return Run(
        cmd=[str(c) for c in cmd],
        rc=proc.returncode,
        wall_s=wall,
        peak_pss_mb=sampler.peak_pss_kb / 1024,
        max_rss_mb=usage.ru_maxrss / 1024,
        tree_cpu_s=tree_cpu,
        bg_cores=bg,
        stdout=stdout,
        stderr=stderr,
    )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile (the 9th of 10)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


# -- setup -------------------------------------------------------------------------------------


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOTOSEARCH_", "RCLIP_", "HF_"))}
    env["HF_HUB_OFFLINE"] = "1"  # nothing may reach for the hub
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def ensure_onnx() -> Path:
    """`onnx` (for torch's ONNX exporter) in a private folder: the project's venv stays as it is."""
    pylib = CACHE / "pylib"
    probe = [sys.executable, "-c", "import onnx"]
    env = dict(os.environ, PYTHONPATH=str(pylib))
    if subprocess.run(probe, env=env, capture_output=True).returncode != 0:
        log("installing onnx into .cache/bench/pylib (for the ONNX export) ...")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--target", str(pylib), "onnx", "protobuf", "ml_dtypes"],
            check=True,
        )
    return pylib


def ensure_models() -> dict:
    out = CACHE / "models"
    if not (out / "done.json").is_file():
        pylib = ensure_onnx()
        log("creating the random ViT-B-32-256 (photosearch HF cache + rclip ONNX files) ...")
        env = dict(base_env(), PYTHONPATH=str(pylib))
        proc = subprocess.run([sys.executable, str(HERE / "models.py"), str(out)], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"bench/models.py failed:\n{proc.stderr[-3000:]}")
    info = json.loads((out / "done.json").read_text())
    info["dir"] = str(out)
    info["hf_home"] = str(out / "hf")  # done.json may hold it relative to wherever models.py ran
    return info


def find_python312() -> str | None:
    """A Python >= 3.12 for rclip 4.x: pyenv's, else one on PATH."""
    candidates = []
    roots = [Path(os.environ.get("PYENV_ROOT", "")), Path.home() / ".pyenv", Path("/root/.pyenv")]
    for root in roots:
        versions = root / "versions"
        if versions.is_dir():
            for v in versions.iterdir():
                m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", v.name)
                if m and (int(m[1]), int(m[2])) >= (3, 12) and (v / "bin" / "python").exists():
                    candidates.append(((int(m[1]), int(m[2]), int(m[3])), str(v / "bin" / "python")))
    if candidates:
        # the oldest >= 3.12: the one rclip's wheels most surely support
        return sorted(candidates)[0][1]
    for name in ("python3.12", "python3.13", "python3.14"):
        found = shutil.which(name)
        if found:
            return found
    return None


def ensure_rclip() -> dict:
    """rclip 4.x in its own venv. Returns {'bin': path, 'version': ...} or {'error': why}."""
    rclip = RCLIP_VENV / "bin" / "rclip"
    python = RCLIP_VENV / "bin" / "python"
    if not rclip.exists():
        base = find_python312()
        if base is None:
            return {"error": "rclip 4.x needs Python >= 3.12 and none was found (pyenv versions, python3.12 on PATH)"}
        log(f"installing {RCLIP_REQUIREMENT} into .cache/bench/rclip-venv with {base} ...")
        try:
            if RCLIP_VENV.exists():
                shutil.rmtree(RCLIP_VENV)
            subprocess.run([base, "-m", "venv", str(RCLIP_VENV)], check=True, capture_output=True)
            proc = subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", RCLIP_REQUIREMENT],
                capture_output=True, text=True,
            )
            if proc.returncode != 0:
                tail = [line for line in proc.stderr.splitlines() if "is ignored" not in line][-3:]
                return {"error": f"pip install {RCLIP_REQUIREMENT} failed: {' | '.join(tail)}"}
        except (OSError, subprocess.CalledProcessError) as exc:
            return {"error": f"could not create rclip's venv: {exc}"}
    proc = subprocess.run([str(rclip), "--version"], capture_output=True, text=True, env=base_env())
    version = (proc.stdout or proc.stderr).strip()
    pyver = subprocess.run([str(python), "-c", "import platform,onnxruntime; print(platform.python_version(), onnxruntime.__version__)"],
                           capture_output=True, text=True).stdout.split()
    return {"bin": str(rclip), "python": str(python), "version": version,
            "python_version": pyver[0] if pyver else "?", "onnxruntime": pyver[1] if len(pyver) > 1 else "?"}


def rclip_datadir(models: dict, where: Path) -> Path:
    """A fresh rclip data dir (so a fresh library: rclip keeps db.sqlite3 there) whose model
    files are links to the shared ONNX files."""
    where.mkdir(parents=True)
    for entry in Path(models["dir"], "rclip").iterdir():
        (where / entry.name).symlink_to(entry)
    return where


# -- the benchmark ------------------------------------------------------------------------------


def photosearch_env(models: dict, home: Path) -> dict[str, str]:
    """photosearch's data and cache dirs in `home`: a new user's state, and nothing of the
    benchmark's lands in the real ~/.cache/photosearch (e.g. its exported text towers)."""
    env = dict(base_env(), HF_HOME=models["hf_home"], PHOTOSEARCH_HOME=str(home), PHOTOSEARCH_CACHE=str(home / "cache"))
    # Byte code as a pip install leaves it (compile_photosearch): without it every run
    # compiled the modules edited since their last .pyc, ~0.1-0.2 s of a query.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_photosearch() -> None:
    """Write photosearch's .pyc files now (pip does at install), so no measured run pays it."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "photosearch")], check=False, capture_output=True)


def rclip_env(datadir: Path) -> dict[str, str]:
    return dict(base_env(), RCLIP_DATADIR=str(datadir))


def count_added(run: Run) -> int | None:
    m = re.search(r"(\d+) added", run.stderr)
    return int(m[1]) if m else None


def rclip_count(datadir: Path) -> int:
    with sqlite3.connect(datadir / "db.sqlite3") as con:
        return con.execute("SELECT COUNT(*) FROM images WHERE deleted IS NULL").fetchone()[0]


def run_index(tool: str, folder: Path, n: int, work: Path, models: dict, rclip: dict, reindex_runs: int,
              second_library: bool = False, library_runs: int = 1) -> dict:
    """Index `folder` into a fresh library (and, for photosearch, a fresh home: its one-time
    per-model work happens here), then re-index it unchanged `reindex_runs` times. With
    `second_library`, photosearch then indexes the folder again into a second new library in
    the same home: the rate a user sees once that one-time work is done (and half of it, for
    the marginal rate), `library_runs` times."""
    result: dict = {}
    if tool == "photosearch":
        db = work / f"ps-{folder.name}.db"
        home = work / f"ps-home-{folder.name}"
        env = photosearch_env(models, home)
        first = [PHOTOSEARCH, "index", folder, "--model", ARCH, "--pretrained", TAG, "--db", db]
        again = [PHOTOSEARCH, "index", folder, "--db", db]
        cwd = None
    else:
        datadir = rclip_datadir(models, work / f"rclip-{folder.name}")
        env = rclip_env(datadir)
        first = again = [rclip["bin"], "-f", QUERIES[0]]
        cwd = folder
    log(f"{tool}: indexing {n} photos of {folder.name} into a fresh library ...")
    run = measure(first, env=env, cwd=cwd)
    if not run.ok():
        return {"error": run.why()}
    indexed = count_added(run) if tool == "photosearch" else rclip_count(datadir)
    if indexed != n:
        return {"error": f"indexed {indexed} of {n} photos"}
    result["index"] = run
    log(f"{tool}: {n / run.wall_s:.2f} photos/s ({run.wall_s:.1f} s, bg CPU {run.bg_cores:.2f})")
    result["reindex"] = []
    for _ in range(reindex_runs):
        again_run = measure(again, env=env, cwd=cwd)
        if not again_run.ok():
            return {**result, "error": "re-index: " + again_run.why()}
        result["reindex"].append(again_run)
    log(f"{tool}: unchanged re-index {median([r.wall_s for r in result['reindex']]):.2f} s")
    result["library"] = {"db": db, "home": home} if tool == "photosearch" else datadir
    if second_library and tool == "photosearch":
        # The one-time work is done now; a second new library shows the rate a user sees from
        # then on, and one of half the photos gives the marginal rate (start-up cancels out).
        # Both are run `library_runs` times, alternating, into new libraries each time: the
        # marginal rate is a difference of two wall times, so their medians are used.
        half = work / f"half-{folder.name}"
        half.mkdir(exist_ok=True)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")
        for p in files[: len(files) // 2]:
            if not (half / p.name).exists():
                os.link(p, half / p.name)
        runs: dict[str, list] = {"second": [], "half": []}
        for attempt in range(library_runs):
            for key, src, count in (("second", folder, n), ("half", half, len(files) // 2)):
                log(f"{tool}: indexing {count} photos of {folder.name} into another new library (same home) ...")
                db2 = work / f"ps-{key}-{attempt}-{folder.name}.db"
                run2 = measure([PHOTOSEARCH, "index", src, "--model", ARCH, "--pretrained", TAG, "--db", db2], env=env)
                if run2.ok() and count_added(run2) == count:
                    runs[key].append(run2)
                    result[f"{key}_n"] = count
                    log(f"{tool}: {count / run2.wall_s:.2f} photos/s ({run2.wall_s:.1f} s, bg CPU {run2.bg_cores:.2f})")
                else:
                    result[f"{key}_error"] = run2.why() if not run2.ok() else f"indexed {count_added(run2)} of {count} photos"
        for key, done in runs.items():
            if done:  # the run of median wall time stands for them all
                result[key] = sorted(done, key=lambda r: r.wall_s)[len(done) // 2]
                result[f"{key}_walls"] = [r.wall_s for r in done]
    return result


def query_cmd(tool: str, text: str, library, models: dict, rclip: dict, folder: Path):
    if tool == "photosearch":
        return ([PHOTOSEARCH, "query", text, "--db", library["db"], "-k", "10", "--json"],
                photosearch_env(models, library["home"]), None)
    return [rclip["bin"], "-n", text], rclip_env(library), folder


def check_query(tool: str, run: Run, expect: int) -> str | None:
    if not run.ok():
        return run.why()
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    got = len(lines) if tool == "photosearch" else len(lines) - 1  # rclip prints a header line
    return None if got == expect else f"{got} results instead of {expect}"


def run_queries(tools: list[str], libraries: dict, folder: Path, n: int, runs: int, models: dict, rclip: dict) -> dict:
    """Cold: each run a query text never asked before in that library (so a future query cache
    can't help), in a fresh process. Repeated: 'a dog' again, in a fresh process."""
    out = {tool: {"cold": [], "repeated": [], "error": None} for tool in tools}
    expect = min(10, n)
    plan = [("cold", QUERIES[i % len(QUERIES)]) for i in range(runs)] + [("repeated", QUERIES[0])] * runs
    for kind, text in plan:
        for tool in tools:  # interleaved, so background load hits both alike
            if out[tool]["error"]:
                continue
            cmd, env, cwd = query_cmd(tool, text, libraries[tool], models, rclip, folder)
            run = measure(cmd, env=env, cwd=cwd)
            problem = check_query(tool, run, expect)
            if problem:
                out[tool]["error"] = f"query {text!r}: {problem}"
                continue
            out[tool][kind].append(run)
    for tool in tools:
        cold = [r.wall_s for r in out[tool]["cold"]]
        if cold:
            log(f"{tool}: cold query median {median(cold):.2f} s")
    return out


def startup_parts(models: dict, rclip: dict, runs: int, home: Path) -> list[tuple[str, float]]:
    """What a fresh process pays before any work: import costs, median of `runs`."""
    env = photosearch_env(models, home)
    weights = str(Path(models["snapshot"]) / "open_clip_model.safetensors")
    probes = [
        ("photosearch venv: python -c pass", [sys.executable, "-c", "pass"], env),
        ("photosearch --help", [PHOTOSEARCH, "--help"], env),
        ("import numpy, faiss", [sys.executable, "-c", "import numpy, faiss"], env),
        ("import onnxruntime", [sys.executable, "-c", "import onnxruntime"], env),
        ("import torch", [sys.executable, "-c", "import torch"], env),
        ("import open_clip (includes torch)", [sys.executable, "-c", "import open_clip"], env),
        ("import open_clip + create ViT-B-32-256 + load its weights", [sys.executable, "-c",
            f"import open_clip,os;open_clip.create_model('{ARCH}',pretrained=os.environ['W'])"], dict(env, W=weights)),
        ("photosearch: import torch + load the ViT-B-32-256 image tower (bf16), as `index` does", [sys.executable, "-c",
            "from photosearch.config import ModelSpec;from photosearch.model.encode import Encoder;from photosearch.model.weights import resolve;"
            f"Encoder(resolve(ModelSpec('{ARCH}','{TAG}')),'cpu',None,parts=('image',))"], env),
    ]
    if "bin" in rclip:
        probes += [
            ("rclip venv: import onnxruntime", [rclip["python"], "-c", "import onnxruntime"], base_env()),
            ("rclip --version", [rclip["bin"], "--version"], base_env()),
        ]
    out = []
    for name, cmd, penv in probes:
        times = []
        for _ in range(runs):
            run = measure(cmd, env=penv)
            if run.ok():
                times.append(run.wall_s)
        out.append((name, median(times)))
    return out


def run_json(cmd: list[str], env: dict, cwd: Path | None = None, timeout: float = 3600) -> dict:
    proc = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"error": f"rc={proc.returncode}: {proc.stderr.strip().splitlines()[-1:] or ''}"}
    sys.stderr.write("".join(line + "\n" for line in proc.stderr.splitlines() if line.startswith("ann:")))
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- machine description --------------------------------------------------------------------------


def first_cpu() -> dict[str, str]:
    """/proc/cpuinfo's fields for the first processor ("model name", "cpu family", "model",
    "flags"...): "AMD EPYC" alone doesn't say Zen 4 or Zen 5, its family and model do."""
    info: dict[str, str] = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if not line.strip():
                break
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    return info


def machine() -> dict:
    cpu = "?"
    flags: set[str] = set()
    ident: dict[str, str] = {}  # a VM's "model name" may be just "AMD EPYC": family and model tell the kind
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and cpu == "?":
                cpu = value.strip()
            if key in ("cpu family", "model") and key not in ident:
                ident[key] = value.strip()
            if key == "flags" and not flags:
                flags = set(value.split())
    if ident:
        cpu += f", family {ident.get('cpu family', '?')} model {ident.get('model', '?')}"
    with open("/proc/meminfo") as f:
        mem_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile") if f in flags]
    sys.path.insert(0, str(REPO))
    # What picks the image tower photosearch indexes with (imports no torch).
    from photosearch.model import cpu_has_native_bf16

    return {
        "cpu": cpu,
        "native_bf16": cpu_has_native_bf16(),
        "cores": len(os.sched_getaffinity(0)),
        "ram_gib": mem_kb / 1024 / 1024,
        "simd": simd,
        "kernel": platform.release(),
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }


def versions() -> dict:
    code = (
        "import json,platform,torch,open_clip,faiss,PIL,numpy,photosearch;"
        "print(json.dumps({'python':platform.python_version(),'torch':torch.__version__,"
        "'open_clip':open_clip.__version__,'faiss':faiss.__version__,'pillow':PIL.__version__,"
        "'numpy':numpy.__version__,'photosearch':photosearch.__version__}))"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "photosearch"], capture_output=True, text=True).stdout.strip()
    out["git"] = git + (" + uncommitted changes in photosearch/" if dirty else "")
    digest = hashlib.sha256()
    for path in sorted((REPO / "photosearch").rglob("*.py")):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    out["code_sha256"] = digest.hexdigest()[:12]
    return out


# -- report -----------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def ratio(ps: float | None, rc: float | None, higher_is_better: bool) -> str:
    """How many times better photosearch is (>1: photosearch better)."""
    if not ps or not rc or math.isnan(ps) or math.isnan(rc):
        return "n/a"
    return f"{(ps / rc) if higher_is_better else (rc / ps):.2f}×"


def report(ctx: dict) -> str:
    m, v, r = ctx["machine"], ctx["versions"], ctx["rclip"]
    lines = ["# photosearch benchmark", ""]
    lines.append(f"- date: {ctx['date']}; run took {ctx['took_min']:.1f} min; mode: {ctx['mode']}")
    lines.append(f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']:.1f} GiB RAM, SIMD: {', '.join(m['simd']) or 'none'}; Linux {m['kernel']}")
    lines.append(f"- load average at start / end: {' '.join(m['loadavg'])} / {' '.join(ctx['loadavg_end'])}")
    lines.append(
        f"- photosearch {v['photosearch']} (git {v['git']}; photosearch/*.py sha256 {v['code_sha256']}); Python {v['python']}, torch {v['torch']}, open_clip {v['open_clip']}, "
        f"faiss {v['faiss']}, Pillow {v['pillow']}, numpy {v['numpy']}"
    )
    if "error" in r:
        lines.append(f"- rclip: NOT RUN: {r['error']}")
    else:
        lines.append(f"- {r['version']} (Python {r['python_version']}, onnxruntime {r['onnxruntime']}); ONNX vs torch cosine ≥ "
                     f"{min(ctx['parity'].get('image_cos_min', float('nan')), ctx['parity'].get('text_cos_min', float('nan'))):.6f}")
    lines.append(f"- model: open_clip {ARCH} (rclip's architecture), random weights (seed 0), the same weights in both tools; "
                 f"photosearch loads them as `--pretrained {TAG}` from a HF cache, rclip as its ONNX files")
    for name, desc in ctx["corpus"].items():
        lines.append(f"- corpus {name}: {desc['count']} × {desc['width']}×{desc['height']} JPEG q90, "
                     f"mean {desc['bytes'] / max(1, desc['count']) / 1e6:.2f} MB (generated, photo-like detail; files in page cache)")
    lines.append("")

    rows = ctx["rows"]
    lines.append("## photosearch vs rclip")
    lines.append("")
    lines.append("| measure | photosearch | rclip | photosearch advantage | bg CPU (ps / rclip) |")
    lines.append("|---|---|---|---|---|")
    for label, row in rows.items():
        cells = [row.get("ps_text") or fmt(row["ps"], row["digits"]), row.get("rc_text") or fmt(row["rc"], row["digits"])]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio(row['ps'], row['rc'], row['higher'])} | {row['bg']} |")
    lines.append("")
    lines.append("photosearch advantage: >1× means photosearch is faster / leaner. Index and re-index: the wall time of the whole "
                 "command, fresh process, photos/s = photos ÷ that time; photosearch's first index run on a machine also does one-time "
                 "per-model work (e.g. exporting its text tower for fast queries), hence the 2nd-library row, whose rclip column "
                 "repeats rclip's first run (rclip has no such step). rclip has no index-only mode, so its index and re-index "
                 "times include one text query (see the start-up table). Query latency: a fresh process per query "
                 f"({ctx['query_runs']} cold runs, each a text not asked before in that library; then {ctx['query_runs']} repeats of \"a dog\", "
                 "which a tool with a query cache can answer from it); p90 is nearest-rank. "
                 "Both tools run with their default settings. Memory: peak summed PSS of the process tree (largest single "
                 "process's peak RSS in brackets), in MB. bg CPU: other processes' CPU use during the measurement, in cores (of 2): "
                 "anything above ~0.1 means the numbers are noisy.")
    lines.extend(["", *[f"- note: {n}" for n in ctx["notes"]]] if ctx["notes"] else [])
    lines.append("")

    if ctx.get("targets"):
        lines.append("## Speed targets")
        lines.append("")
        lines.append("| target | goal | measured | |")
        lines.append("|---|---|---|---|")
        for target, goal, measured, ok in ctx["targets"]:
            lines.append(f"| {target} | {goal} | {measured} | {ok} |")
        lines.append("")

    lines.extend(fixed_costs(ctx))

    parts = ctx.get("startup") or []
    if parts:
        lines.append(f"## Start-up costs (fresh process{'' if ctx['quick'] else ', median of 3'})")
        lines.append("")
        lines.append("| step | wall s |")
        lines.append("|---|---|")
        for name, secs in parts:
            lines.append(f"| {name} | {fmt(secs, 2)} |")
        lines.append("")

    ms = ctx.get("model_speed") or {}
    ort = ctx.get("ort_speed") or {}
    lines.append("## Model ceiling: ViT-B-32-256 image tower alone (no decoding), 2 threads")
    lines.append("")
    lines.append("| runtime | batch | images/s |")
    lines.append("|---|---|---|")
    if "error" in ms:
        lines.append(f"| torch | 32 | failed: {ms['error']} |")
    else:
        lines.append(f"| torch {ms.get('torch', '')}, fp32 | {ms.get('batch')} | {fmt(ms.get('fp32'), 1)} |")
        if ms.get("bf16"):
            lines.append(f"| torch, weights and input in bfloat16 (photosearch's choice on this CPU) | {ms.get('batch')} | {fmt(ms.get('bf16'), 1)} |")
        else:
            lines.append("| torch bfloat16 | – | not run: this CPU has no native bf16 (emulated it is ~6× slower than fp32) |")
        if ms.get("bf16_parallel"):
            lines.append(f"| torch bfloat16, as two batches at once on 1 thread each | 2 × {ms['batch'] // 2} | {fmt(ms['bf16_parallel'], 1)} |")
        if ms.get("ps_bf16"):
            lines.append(f"| photosearch's own tower (towers.py), bfloat16 | {ms['batch']} | {fmt(ms['ps_bf16'], 1)} |")
        if ms.get("ps_bf16_parallel"):
            lines.append(f"| photosearch's own tower, two batches at once on 1 thread each (how it indexes) | 2 × {ms['batch'] // 2} "
                         f"| {fmt(ms['ps_bf16_parallel'], 1)} |")
        chosen = " (how it indexes on this CPU)" if not ms.get("bf16") else ""
        if ms.get("ps_fp32_parallel"):
            lines.append(f"| photosearch's torch tower in fp32, two batches at once on 1 thread each ({ms['ps_fp32_parallel_cpu_ms']:.0f} CPU-ms an image) "
                         f"| 2 × {ms['batch'] // 2} | {fmt(ms['ps_fp32_parallel'], 1)} |")
        if ms.get("ort_fp32_parallel"):
            lines.append(f"| photosearch's ONNX Runtime tower, fp32, one thread a batch{chosen} ({ms['ort_fp32_parallel_cpu_ms']:.0f} CPU-ms an image) "
                         f"| 2 × batches of 4 | {fmt(ms['ort_fp32_parallel'], 1)} |")
    ms1 = ctx.get("model_speed_1t") or {}
    if ms1.get("bf16"):
        lines.append(f"| torch bfloat16, 1 thread (= {1000 / ms1['bf16']:.0f} core-ms per image) | {ms1.get('batch')} | {fmt(ms1.get('bf16'), 1)} |")
    if ort and "error" not in ort:
        lines.append(f"| ONNX Runtime fp32 (rclip; its default batch is 8) | 8 | {fmt(ort.get('b8'), 1)} |")
        lines.append(f"| ONNX Runtime fp32 | 32 | {fmt(ort.get('b32'), 1)} |")
    elif ort:
        lines.append(f"| ONNX Runtime | - | failed: {ort['error']} |")
    lines.append("")

    dec = ctx.get("decode_speed") or {}
    if dec:
        lines.append("## Decoding cost: photosearch's worker job per photo, one process")
        lines.append("")
        lines.append("| corpus | photos timed | CPU ms per photo (median) |")
        lines.append("|---|---|---|")
        for name, d in dec.items():
            lines.append(f"| {name} | {d.get('n', '-')} | {fmt(d.get('ms_median'), 1) if 'error' not in d else 'failed: ' + d['error']} |")
        lines.append("")
        lines.append("Reduced-scale JPEG decoding (`Image.draft` to ≥ 2× the model's input), EXIF orientation, the content "
                     "fingerprint and the resize + crop to the model's input, timed as CPU time in one process.")
        lines.append("")

    thumbs = ctx.get("thumbnails") or {}
    if "error" in thumbs:
        lines.extend(["## Thumbnails", "", f"failed: {thumbs['error']}", ""])
    elif thumbs:
        import thumbnails as thumbnail_bench  # bench/thumbnails.py

        lines.extend(thumbnail_bench.report_lines(thumbs))

    ann = ctx.get("ann") or {}
    lines.append("## Search latency, synthetic clustered 512-d unit vectors (1 query, top-10)")
    lines.append("")
    if "error" in ann:
        lines.append(f"failed: {ann['error']}")
    else:
        threads = ann.get("omp_threads")
        lines.append(f"| index | vectors | median ms ({threads} threads) | p90 ms | median ms (1 thread) | p90 ms | recall@10 | build s |")
        lines.append("|---|---|---|---|---|---|---|---|")

        def cells(row):
            return (f"{fmt(row['ms_median'], 2)} | {fmt(row['ms_p90'], 2)} | {fmt(row.get('ms_median_1thread'), 2)} | "
                    f"{fmt(row.get('ms_p90_1thread'), 2)}")

        for row in ann.get("exact", []):
            lines.append(f"| exact: FAISS IndexFlatIP (the ground truth) | {row['n']:,} | {cells(row)} | 1.000 | {fmt(row['build_s'], 1)} |")
        for row in ann.get("ann", []):
            lines.append(f"| candidate ANN: {row['kind']} | {row['n']:,} | {cells(row)} | {fmt(row['recall@10'], 3)} | {fmt(row['build_s'], 1)} |")
        lines.append("")
        lines.append(f"FAISS {ann.get('faiss')} ({threads} OpenMP threads by default); 1000 clusters with Zipf-like sizes, "
                     "queries drawn from the same mixture; each latency is the best of 3 rounds of 20 queries (median, p90 within the round); "
                     "recall@10 against the exact top-10 over 200 queries. Rows named photosearch are the index photosearch itself builds "
                     "(bench/ann.py prints its own tables for float16 storage, cold loads and incremental updates).")
    lines.append("")
    return "\n".join(lines)


def fixed_costs(ctx: dict) -> list[str]:
    """What a user meets before throughput matters, one row each: a first run on the machine
    against a later one, a small update, an unchanged re-index, a cold and a repeated query."""
    rows, raw = ctx["rows"], ctx.get("raw", {})
    out = []

    def add(label, ps, rc=None, note=""):
        out.append(f"| {label} | {ps} | {rc if rc is not None else '-'} | {note} |")

    for name in ("12mp", "1080p"):
        ps = raw.get(f"index {name}", {}).get("photosearch", {})
        if "index" in ps and "second" in ps:
            n = ctx["corpus"][name]["count"]
            first, later = ps["index"].wall_s, ps["second"].wall_s
            add(f"index {n} × {'12 MP' if name == '12mp' else '1080p'}: first run on the machine − a later run (new library), s",
                f"{first:.1f} − {later:.1f} = **{first - later:+.1f}**", None, "target: ≤ +1 s")
    small = (ctx.get("small_update") or {}).get("table", {})
    for n, ways in small.items():
        ps, torch_only, rc = ways.get("photosearch"), ways.get("photosearch, torch always"), ways.get("rclip")
        note = f"torch always: {torch_only['wall_s']:.2f} s" if torch_only else ""
        add(f"{n} new 1080p photos into a library, wall s (median)", f"**{ps['wall_s']:.2f}**" if ps else "-",
            f"{rc['wall_s']:.2f} (incl. one query)" if rc else None, note + "; target ≤ 1.5 s")
    if "error" in (ctx.get("small_update") or {}):
        add("small update", f"failed: {ctx['small_update']['error']}")
    for label, row in rows.items():
        if label.startswith("re-index") or label.startswith(("cold text query, median", "repeated text query, median")):
            goal = {"cold": "target ≤ 0.25 s", "repe": "target ≤ 0.15 s", "re-i": "stays ≈ 0.3 s"}[label[:4]]
            add(label, fmt(row["ps"], 2), fmt(row["rc"], 2) if row["rc"] is not None else None, goal)
    if not out:
        return []
    return ["## Fixed costs (what a user meets first)", "",
            "| case | photosearch | rclip | |", "|---|---|---|---|", *out, "",
            "Each a fresh process, start-up included; compare the tools within this run (figures move between CPUs). "
            "The small update restores a library of 20 photos whose cache folder is filled, then indexes 20 new ones "
            "(bench/small_update.py); 'torch always' is PHOTOSEARCH_SMALL_RUN=0.", ""]


def targets(ctx: dict) -> list[tuple[str, str, str, str]]:
    """The speed targets against this run's numbers: (target, goal, measured, verdict)."""
    rows, out = ctx["rows"], []

    def row(prefix):
        return next((r for label, r in rows.items() if label.startswith(prefix)), None)

    def verdict(ok):
        return "—" if ok is None else ("met" if ok else "not met")

    ms, ms1 = ctx.get("model_speed") or {}, ctx.get("model_speed_1t") or {}
    dec = ctx.get("decode_speed") or {}
    # The model's core-ms an image in the tower photosearch indexes with on this CPU.
    if ms1.get("bf16"):
        model_core_ms, model_name = 1000 / ms1["bf16"], "bf16 model"
    elif ms.get("ort_fp32_parallel_cpu_ms"):
        model_core_ms, model_name = ms["ort_fp32_parallel_cpu_ms"], "ONNX Runtime fp32 model"
    else:
        model_core_ms, model_name = None, ""
    first, second = row("index 12 MP ("), row("index 12 MP, photosearch's 2nd")
    if first and first["rc"]:
        got = [first["ps"] / first["rc"]] + ([second["ps"] / second["rc"]] if second and second["ps"] else [])
        out.append(("index 12 MP JPEGs vs rclip", "≥ 3×", " / ".join(f"{g:.2f}×" for g in got) + " (1st library / 2nd)",
                    verdict(max(got) >= 3)))

    def floor(corpus: str) -> float | None:
        """This machine's ceiling for indexing `corpus`: decoding and the model share the
        2 cores, so photos/s can't pass 2 cores ÷ (decode + model core-ms per photo)."""
        if not model_core_ms or "error" in dec.get(corpus, {"error": 1}):
            return None
        return 2 * 1000 / (dec[corpus]["ms_median"] + model_core_ms)

    def floor_row(label: str, corpus: str, reached: list) -> None:
        out.append((f"index {label}: this machine's floor", "report the fraction",
                    f"floor {floor(corpus):.1f} photos/s (2 cores ÷ ({dec[corpus]['ms_median']:.0f} ms decode + {model_core_ms:.0f} ms {model_name}) "
                    f"per photo); reached " + " / ".join(f"{r:.1f} ({r / floor(corpus):.0%})" for r in reached) + " (2nd library / marginal)", "—"))

    if floor("12mp"):
        floor_row("12 MP", "12mp", [r["ps"] for r in (second, row("index 12 MP, photosearch's marginal")) if r and r["ps"]])
        if first and first["rc"]:
            out.append(("  ⇒ best possible vs rclip here", "", f"{floor('12mp') / first['rc']:.2f}× (floor ÷ rclip's rate)", ""))
    marginal = (ctx.get("marginal") or {}).get("1080p")
    whole = row("index 1080p, photosearch's 2nd")
    # Model-only: the fastest way measured to run the model alone, whichever tower and layout.
    layouts = {"open_clip, 1 batch on 2 threads": ms.get("bf16"), "open_clip, 2 batches on 1 thread each": ms.get("bf16_parallel"),
               "photosearch's tower, 1 batch on 2 threads": ms.get("ps_bf16"),
               "photosearch's tower, 2 batches on 1 thread each": ms.get("ps_bf16_parallel"),
               "photosearch's ONNX Runtime tower, 1 thread a batch": None if ms.get("bf16") else ms.get("ort_fp32_parallel")}
    layouts = {k: v for k, v in layouts.items() if v}
    if layouts and (marginal or whole):
        best_name, best = max(layouts.items(), key=lambda kv: kv[1])
        parts = []
        if marginal:
            parts.append(f"marginal {marginal:.1f} photos/s = {marginal / best:.0%}")
        if whole and whole["ps"]:
            parts.append(f"whole command (start-up included) {whole['ps']:.1f} = {whole['ps'] / best:.0%}")
        out.append((f"index 1080p vs model-only throughput ({'bf16' if ms.get('bf16') else 'fp32'}, the fastest layout measured: {best_name}, {best:.1f} images/s)", "≥ 75%",
                    "; ".join(parts), verdict((marginal or 0) / best >= 0.75)))
        if floor("1080p"):
            floor_row("1080p", "1080p", [r for r in ((whole or {}).get("ps"), marginal) if r])
            out.append(("  ⇒ best possible vs model-only here", "",
                        f"{floor('1080p') / best:.0%} (floor ÷ model-only: decoding can hide behind the model only on cores it leaves idle)", ""))
    cold, rep = row("cold text query, median"), row("repeated text query, median")
    if cold and cold["ps"] and cold["rc"]:
        out.append(("cold text query wall time vs rclip", "≤ 0.5×", f"{cold['ps']:.2f} s vs {cold['rc']:.2f} s = {cold['ps'] / cold['rc']:.2f}×",
                    verdict(cold["ps"] / cold["rc"] <= 0.5)))
    if rep and rep["ps"]:
        out.append(("repeated text query", "≤ 0.3 s", f"{rep['ps']:.2f} s", verdict(rep["ps"] <= 0.3)))
    qmem = row("peak memory, cold text query")
    if qmem and qmem["ps"] and qmem["rc"]:
        out.append(("peak memory of a cold query vs rclip", "≤ rclip", f"{qmem['ps']:.0f} MB vs {qmem['rc']:.0f} MB", verdict(qmem["ps"] <= qmem["rc"])))
    imem = [r["ps"] for label, r in rows.items() if label.startswith("peak memory, index") and r["ps"]]
    if imem:
        out.append(("peak memory of an index run", "≤ 1.5 GB", f"{max(imem):.0f} MB (largest of the index runs)", verdict(max(imem) <= 1536)))
    ann = ctx.get("ann") or {}
    big = [r for r in ann.get("precision", []) if r.get("n") == 1_000_000]
    if big:
        cells = [f"{r['dtype']}: {r.get('ms_median_1thread') or r['ms_median']:.1f} ms, recall@10 {r['recall@10']:.3f}" for r in big]
        worst = max(r.get("ms_median_1thread") or r["ms_median"] for r in big)
        recall = min(r["recall@10"] for r in big)  # fast and wrong is not met
        out.append(("one query at 1 M vectors (photosearch's own index)", "≤ 20 ms, recall@10 ≥ 0.95", "; ".join(cells),
                    verdict(worst <= 20 and recall >= 0.95)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 30 + 30 photos, 3 query runs, fewer repeats, search at 10k/100k only")
    parser.add_argument("--n12mp", type=int, help="12 MP photos (default 200; --quick 30)")
    parser.add_argument("--n1080p", type=int, help="1080p photos (default 200; --quick 30)")
    parser.add_argument("--query-runs", type=int, help="fresh processes per query measure (default 10; --quick 3)")
    parser.add_argument("--reindex-runs", type=int, default=3, help="unchanged re-index repeats (default 3)")
    parser.add_argument("--library-runs", type=int, help="photosearch's 2nd and half-size libraries, each (default 3; --quick 1)")
    parser.add_argument("--ann-sizes", help="library sizes for candidate ANN (default 100000,1000000; --quick 100000)")
    parser.add_argument("--no-rclip", action="store_true", help="photosearch only")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: index,query,small,startup,model,thumbnails,ann")
    args = parser.parse_args()
    quick = args.quick
    n12 = args.n12mp if args.n12mp is not None else (30 if quick else 200)
    n1080 = args.n1080p if args.n1080p is not None else (30 if quick else 200)
    query_runs = args.query_runs or (3 if quick else 10)
    library_runs = args.library_runs or (1 if quick else 3)
    ann_sizes = args.ann_sizes or ("100000" if quick else "100000,1000000")
    exact_sizes = "10000,100000" if quick else "10000,100000,1000000"
    skip = set(filter(None, args.skip.split(",")))
    started = time.monotonic()
    ctx: dict = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine(),
                 "mode": ("--quick" if quick else "default") + (f" (n12mp={n12}, n1080p={n1080}, query runs={query_runs})"),
                 "query_runs": query_runs, "quick": quick, "notes": [], "rows": {}}
    CACHE.mkdir(parents=True, exist_ok=True)
    log(f"machine: {ctx['machine']}")
    ctx["versions"] = versions()

    # setup
    folders = {}
    for name, count in (("12mp", n12), ("1080p", n1080)):
        if count > 0:
            folders[name] = corpus.ensure(CACHE / "corpus", name, count, log=log)
    ctx["corpus"] = {name: corpus.describe(folder) for name, folder in folders.items()}
    models = ensure_models()
    compile_photosearch()
    rclip = {"error": "skipped (--no-rclip)"} if args.no_rclip else ensure_rclip()
    ctx["parity"] = {}
    if "bin" in rclip:
        ctx["parity"] = run_json([rclip["python"], HERE / "rclip_side.py", "parity", models["dir"]], base_env())
        if "error" in ctx["parity"] or min(ctx["parity"].values()) < 0.999:
            rclip = {"error": f"its ONNX files don't match the torch model: {ctx['parity']}"}
    ctx["rclip"] = rclip
    tools = ["photosearch"] + (["rclip"] if "bin" in rclip else [])
    rows = ctx["rows"]

    def add_row(label, ps, rc, digits, higher, bg="", ps_text=None, rc_text=None):
        rows[label] = {"ps": ps, "rc": rc, "digits": digits, "higher": higher, "bg": bg, "ps_text": ps_text, "rc_text": rc_text}

    def mem_text(run):
        return f"{run.peak_pss_mb:.0f} ({run.max_rss_mb:.0f})" if run is not None else None

    def bg(*runs_by_tool) -> str:
        parts = []
        for runs in runs_by_tool:
            runs = [r for r in runs if r is not None]
            parts.append(f"{max(r.bg_cores for r in runs):.2f}" if runs else "-")
        return " / ".join(parts)

    with tempfile.TemporaryDirectory(dir=CACHE, prefix="run-") as tmp:
        work = Path(tmp)
        indexed: dict = {}
        if "index" not in skip:
            for i, (name, folder) in enumerate(folders.items()):
                n = ctx["corpus"][name]["count"]
                order = tools if i % 2 == 0 else tools[::-1]  # alternate who goes first
                res = {tool: run_index(tool, folder, n, work, models, rclip, args.reindex_runs, second_library=True,
                                      library_runs=library_runs)
                       for tool in order}
                indexed[name] = res
                ctx.setdefault("raw", {})[f"index {name}"] = res
                for tool in tools:
                    if "error" in res[tool]:
                        ctx["notes"].append(f"{tool} index {name}: {res[tool]['error']}")
                ps, rc = res["photosearch"], res.get("rclip", {})

                def rate(x, n=n):
                    return n / x["index"].wall_s if "index" in x else None

                def reidx(x):
                    return median([r.wall_s for r in x["reindex"]]) if x.get("reindex") else None

                label = "12 MP" if name == "12mp" else "1080p"
                def wall(x):
                    return x["index"].wall_s if "index" in x else None

                add_row(f"index {label} ({n} photos), photos/s", rate(ps), rate(rc), 2, True, bg([ps.get("index")], [rc.get("index")]))
                add_row(f"index {label}, wall s", wall(ps), wall(rc), 1, False)
                if "second" in ps:
                    add_row(f"index {label}, photosearch's 2nd library (one-time work done; median of {library_runs}), photos/s", n / ps["second"].wall_s, rate(rc),
                            2, True, bg([ps["second"]], [rc.get("index")]))
                    if "half" in ps and ps["second"].wall_s > ps["half"].wall_s:
                        marginal = (n - ps["half_n"]) / (ps["second"].wall_s - ps["half"].wall_s)
                        ctx.setdefault("marginal", {})[name] = marginal
                        add_row(f"index {label}, photosearch's marginal rate (start-up excluded; medians of {library_runs}), photos/s", marginal, None, 2, True,
                                bg([ps["second"], ps["half"]], []))
                for key in ("second_error", "half_error"):
                    if key in ps:
                        ctx["notes"].append(f"photosearch {key.split('_')[0]} library {name}: {ps[key]}")
                cpu_ps = (ps["second"] if "second" in ps else ps.get("index"))
                add_row(f"index {label}, CPU core-seconds per photo (whole process tree)", cpu_ps.tree_cpu_s / n if cpu_ps else None,
                        rc["index"].tree_cpu_s / n if "index" in rc else None, 3, False)
                add_row(f"re-index {label} unchanged, s (median of {args.reindex_runs})", reidx(ps), reidx(rc), 2, False,
                        bg(ps.get("reindex", []), rc.get("reindex", [])))
                psi, rci = ps.get("index"), rc.get("index")
                add_row(f"peak memory, index {label}, MB", psi.peak_pss_mb if psi else None, rci.peak_pss_mb if rci else None,
                        0, False, "", mem_text(psi), mem_text(rci))

        if "query" not in skip and indexed:
            name = "12mp" if "12mp" in indexed else next(iter(indexed))
            libs = {tool: indexed[name][tool].get("library") for tool in tools if indexed[name][tool].get("library")}
            qtools = [t for t in tools if t in libs]
            log(f"queries: {query_runs} cold + {query_runs} repeated per tool on the {name} library ...")
            q = run_queries(qtools, libs, folders[name], ctx["corpus"][name]["count"], query_runs, models, rclip)
            ctx.setdefault("raw", {})["queries"] = q
            for tool in qtools:
                if q[tool]["error"]:
                    ctx["notes"].append(f"{tool} query: {q[tool]['error']}")
            get = lambda tool, kind, f: f([r.wall_s for r in q[tool][kind]]) if q.get(tool, {}).get(kind) else None  # noqa: E731
            runs = lambda tool, kind: q.get(tool, {}).get(kind, [])  # noqa: E731
            lib_n = ctx["corpus"][name]["count"]
            for kind in ("cold", "repeated"):
                add_row(f"{kind} text query, median s ({lib_n}-photo library)", get("photosearch", kind, median), get("rclip", kind, median),
                        2, False, bg(runs("photosearch", kind), runs("rclip", kind)))
                add_row(f"{kind} text query, p90 s", get("photosearch", kind, p90), get("rclip", kind, p90), 2, False)

            def peak_run(tool, kind):
                return max(runs(tool, kind), key=lambda r: r.peak_pss_mb, default=None)

            for kind in ("cold", "repeated"):
                pr, rr = peak_run("photosearch", kind), peak_run("rclip", kind)
                add_row(f"peak memory, {kind} text query, MB", pr.peak_pss_mb if pr else None, rr.peak_pss_mb if rr else None,
                        0, False, "", mem_text(pr), mem_text(rr))

    if "small" not in skip and "1080p" in folders:
        log("small updates: 20 new 1080p photos into a library, photosearch (as shipped, and torch always) and rclip ...")
        ctx["small_update"] = run_json([sys.executable, HERE / "small_update.py", "--json", "--new", "20",
                                        "--runs", "1" if quick else "5", *(["--no-rclip"] if "bin" not in rclip else [])],
                                       base_env())

    if "startup" not in skip:
        log("cold-start components ...")
        ctx["startup"] = startup_parts(models, rclip, 1 if quick else 3, CACHE / "probe-home")
    if "model" not in skip:
        log("model ceiling: image tower images/s ...")
        # Where the CPU has no native bfloat16, photosearch indexes with its ONNX Runtime tower
        # (model.small_run_limit) and emulated bf16 is ~6x slower than fp32: time what runs.
        no_bf16 = ["--no-bf16"] if ctx["machine"]["native_bf16"] is False else []
        ctx["model_speed"] = run_json([sys.executable, HERE / "model_speed.py", "--repeats", "1" if quick else "5",
                                       "--hf-home", models["hf_home"], "--onnx", *no_bf16], base_env(), cwd=HERE)
        ctx["model_speed_1t"] = run_json([sys.executable, HERE / "model_speed.py", "--threads", "1", "--repeats", "1" if quick else "3",
                                          *no_bf16], base_env(), cwd=HERE)  # fmt: skip
        log("decode cost per photo (one process, photosearch's worker job) ...")
        ctx["decode_speed"] = {name: run_json([sys.executable, HERE / "decode_speed.py", folder, "--n", "10" if quick else "30"], base_env())
                               for name, folder in folders.items()}
        if "bin" in rclip:
            ctx["ort_speed"] = run_json([rclip["python"], HERE / "rclip_side.py", "speed", models["dir"], "1" if quick else "3"], base_env())
    if "thumbnails" not in skip and folders:
        log("thumbnails: per photo in the workers vs on request, index throughput with and without --thumbnails ...")
        ctx["thumbnails"] = run_json([sys.executable, HERE / "thumbnails.py", "--json", "--runs", "1" if quick else "3",
                                      "--timed", "10" if quick else "30", *(f"--folder={name}={folder}" for name, folder in folders.items())],
                                     base_env())
    if "ann" not in skip:
        log(f"search latency: exact at {exact_sizes}, candidate ANN at {ann_sizes} ...")
        ctx["ann"] = run_json([sys.executable, HERE / "ann.py", "--sizes", exact_sizes, "--ann-sizes", ann_sizes], base_env())

    ctx["targets"] = targets(ctx)
    ctx["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    end = versions()
    if end["code_sha256"] != ctx["versions"]["code_sha256"]:
        ctx["notes"].append(f"photosearch's code changed while this ran (git {ctx['versions']['git']} at the start, "
                            f"{end['git']} at the end): rows measured at different times may reflect different code")
    ctx["took_min"] = (time.monotonic() - started) / 60
    text = report(ctx)
    print(text)
    results = CACHE / "results"
    results.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (results / f"{stamp}.md").write_text(text)
    (results / f"{stamp}.json").write_text(json.dumps(ctx, default=_jsonable, indent=1))
    log(f"report saved to {results / (stamp + '.md')}")


def _jsonable(obj):
    if isinstance(obj, Run):
        return {k: v for k, v in obj.__dict__.items() if k not in ("stdout", "stderr")}
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


if __name__ == "__main__":
    main()
