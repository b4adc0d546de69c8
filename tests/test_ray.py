"""`index --ray` on a real Ray cluster: two nodes on this machine, on the loopback only.

The trained tiny CLIP indexes held-out pictures through the cluster, and the library must
equal a single-process run of the same pictures: the same rows, vectors within cosine
0.999, the same query results. A node killed mid-run (its raylet and its workers, by PID)
leaves a run that still ends equal; a killed driver's successor resumes; a node that can't
see the photos (a node started in a mount namespace where the folder is an empty tmpfs) is
named before any work starts; without Ray, `--ray` is a one-line error.

Every Ray process these tests start is theirs alone: each node has its own temp dir, and
stopping a node kills the processes whose command line names that dir and their children.
Each node is started by tests/support/ray_node.py (not `ray start`, which can't keep a
second node on 127.0.0.1: see there), and every socket the cluster's processes listen on,
and the driver's, is checked to be on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support import framing, synthetic
from tests.support.train import trained_tiny_model

RAY_BIN = Path(sys.executable).with_name("ray")  # installed with Ray: the extra is complete
REPO = Path(__file__).resolve().parent.parent
HELDOUT_SEED = 4242  # public seeds never produce training pictures (synthetic.py)
PER_CLASS = 120  # 16 classes: 1920 square pictures, plus the framed ones below
FRAMED_PER_CLASS = 4  # 4:3, 16:9 and 9:16 pictures: several tiles each (--crops max)
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 400
NODE_CPUS = 2


def _ray_installed() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return RAY_BIN.exists()


if not _ray_installed():
    # Under CI a missing extra fails, as a missing browser does (tests/support/browser.py).
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise RuntimeError("tests/test_ray.py needs Ray: pip install -e '.[test,ray]' (what `make test` installs)")
    pytest.skip("Ray is not installed: pip install -e '.[test,ray]'", allow_module_level=True)


# -- a cluster of our own ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_of(marker: str) -> list[int]:
    """PIDs whose command line names `marker` (a node's own temp dir), with all their
    descendants (Ray renames its workers `ray::…`; they are the raylet's children)."""
    parents: dict[int, int] = {}
    roots = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        if marker.encode() in cmdline and pid != os.getpid() and state != "Z":
            roots.append(pid)
    return _with_children(roots, parents)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    """`pid` and all its descendants now."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    return _with_children([pid], parents)


def _with_children(roots: list[int], parents: dict[int, int]) -> list[int]:
    found, frontier = set(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                frontier.append(pid)
    return sorted(found)


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone, or not ours to read
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _address(hex_address: str) -> str:
    """/proc/net/{tcp,udp}[6]'s local address (host-order 32-bit words, in hex): an IP."""
    raw = bytes.fromhex(hex_address)
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(packed)
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


def _listening(pids: list[int]) -> list[tuple[int, str, str, int]]:
    """(pid, name, IP, port) of every TCP socket these processes listen on, and every UDP
    socket they hold bound but unconnected, read from /proc (what `ss -ltnup` shows)."""
    owner = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
    found = []
    for table, listen_state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            if inode not in owner or state != listen_state or int(remote.split(":")[1], 16):
                continue  # not theirs, or a connection (a UDP socket with a peer)
            ip, port = local.split(":")
            pid = owner[inode]
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                name = "?"
            found.append((pid, name, _address(ip), int(port, 16)))
    return sorted(found)


def _assert_loopback_only(pids: list[int], what: str) -> list[tuple[int, str, str, int]]:
    """Our rule: servers in tests listen on 127.0.0.1 only, a Ray cluster's too."""
    listening = _listening(pids)
    assert listening, f"{what}: no listening socket found; is /proc readable?"
    beyond = [entry for entry in listening if entry[2] != "127.0.0.1"]
    assert not beyond, f"{what} listen beyond 127.0.0.1: {beyond}"
    return listening


class Node:
    def __init__(self, temp_dir: Path):
        self.temp_dir = temp_dir
        self.node_id = ""  # Ray's, and the raylet's PID: known once started
        self.raylet_pid = 0

    def pids(self) -> list[int]:
        return _processes_of(str(self.temp_dir))

    def kill(self) -> None:
        """SIGKILL the node's raylet and workers (and whatever else it started), then wait
        (bounded) until none is left."""
        for _ in range(3):
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.pids():
                time.sleep(0.1)
            if not self.pids():
                return
        raise AssertionError(f"node processes of {self.temp_dir} survive SIGKILL: {self.pids()}")


class Cluster:
    """A head node and worker nodes on this machine, each with its own temp dir, all on
    127.0.0.1 (tests/support/ray_node.py says how)."""

    def __init__(self, root: Path):
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[Node] = []
        self.env = {
            **os.environ,
            "HOME": str(root),
            # Token authentication (Ray 2.60's default) with a token of these tests' own: the
            # servers listen on 127.0.0.1 only, and the token keeps this machine's other
            # users and processes out of them too.
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
            # A test-cluster setting, for the nodes (ray_node.py sets it as well) and for every
            # driver these tests start: Ray's "cluster mode" off, so that Ray keeps the node
            # address 127.0.0.1 instead of resolving it to this machine's own address. A driver
            # joining `--ray 127.0.0.1:PORT` without it rewrites even the GCS address to the
            # machine's own (192.0.2.2 here), a target beyond the loopback where nothing
            # answers, and retries for minutes. photosearch itself sets it only for `--ray` alone: a user's cluster,
            # joined at 127.0.0.1 on its head, has its nodes at the machine's address.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        }

    def start_node(self, name: str, *, head: bool = False, wrap: list[str] | None = None) -> Node:
        temp_dir = self.root / name
        temp_dir.mkdir()
        args = [sys.executable, "-m", "tests.support.ray_node", f"--temp-dir={temp_dir}", f"--num-cpus={NODE_CPUS}"]
        args += ["--head", f"--port={self.port}"] if head else [f"--address={self.address}"]
        node = Node(temp_dir)
        self.nodes.append(node)  # before starting: a half-started node is stopped too
        command = (wrap or []) + args
        started = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=START_TIMEOUT_S, cwd=REPO)
        assert started.returncode == 0, f"{' '.join(command)}:\n{started.stdout}\n{started.stderr}"
        said = json.loads(started.stdout.strip().splitlines()[-1])
        assert said["address"] == self.address, said
        node.node_id, node.raylet_pid = said["node_id"], said["raylet_pid"]
        assert node.raylet_pid in node.pids(), f"the raylet of {name} ({node.raylet_pid}) isn't running: {started.stderr}"
        return node

    def pids(self) -> list[int]:
        return sorted(pid for node in self.nodes for pid in node.pids())

    def assert_loopback_only(self, *others: int) -> list[tuple[int, str, str, int]]:
        """Every socket the cluster's processes (and `others`, with their children) listen
        on is on 127.0.0.1; returns them."""
        pids = self.pids() + [pid for other in others for pid in _descendants(other)]
        return _assert_loopback_only(pids, "the Ray cluster's processes")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.kill()

    def node_ids(self) -> dict[str, str]:
        """{node id: temp dir} of the nodes alive now, asked of the cluster itself."""
        script = (
            "import json, ray\n"
            f"ray.init(address={self.address!r}, log_to_driver=False)\n"
            "print(json.dumps({n['NodeID']: n['ObjectStoreSocketName'] for n in ray.nodes() if n['Alive']}))\n"
        )
        out = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        assert out.returncode == 0, out.stderr
        sockets = json.loads(out.stdout.strip().splitlines()[-1])
        return {node_id: next(str(n.temp_dir) for n in self.nodes if str(n.temp_dir) in path) for node_id, path in sockets.items()}


@pytest.fixture(scope="module")
def cluster():
    # A short root: Ray's Unix socket paths (under each temp dir) must stay under ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix="psray-", dir="/tmp"))
    made = Cluster(root)
    try:
        made.start_node("head", head=True)
        made.start_node("second")
        heads = {pid for pid, *_ in made.assert_loopback_only()}
        assert made.nodes[0].raylet_pid in heads and made.nodes[1].raylet_pid in heads  # two raylets, each listening
        yield made
        made.assert_loopback_only()  # and the workers the tests left
    finally:
        made.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- pictures, and the single-process library to compare with ---------------------------------


@pytest.fixture(scope="module")
def trained() -> Path:
    return trained_tiny_model()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray") / "pictures"
    synthetic.write_folder(folder / "square", per_class=PER_CLASS, seed=HELDOUT_SEED)
    framing.write_folder(folder / "framed", ("4:3", "16:9", "9:16"), per_class=FRAMED_PER_CLASS, seed=HELDOUT_SEED + 1)
    (folder / "framed" / "labels.json").unlink()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not the rest of a JPEG")
    (folder / "empty.jpg").write_bytes(b"")
    return folder


def _count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*.jpg") if p.stat().st_size > 100)


@pytest.fixture(scope="module")
def single(tmp_path_factory, trained, pictures) -> Path:
    """The library of one process (the default path), to compare every cluster run with."""
    db = tmp_path_factory.mktemp("single") / "library.db"
    run = _index(pictures, db, trained)
    assert run.returncode == 3, run.stderr  # the two bad files
    return db


def _index(folder: Path, db: Path, model: Path, *extra: str, env: dict | None = None, timeout: float = RUN_TIMEOUT_S):
    return subprocess.run([sys.executable, "-m", "photosearch", "index", str(folder), "--db", str(db), "--model", f"local-dir:{model}", *extra],
                          env=env or dict(os.environ), capture_output=True, text=True, timeout=timeout, cwd=REPO)  # fmt: skip


def _start_index(folder: Path, db: Path, model: Path, *extra: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "photosearch", "index", str(folder), "--db", str(db), "--model", f"local-dir:{model}", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip


def _committed(db: Path) -> int:
    """Photos the library holds now, read as any reader would while a run writes."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM photos").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def _rows(db: Path) -> dict[str, tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT id, path, size, mtime_ns, width, height, taken_at, fingerprint, crops, embedding, tiles FROM photos").fetchall()
        failures = conn.execute("SELECT path, reason FROM failures").fetchall()
    out = {os.fsdecode(r[1]): r for r in rows}
    out["failures"] = tuple(sorted((os.fsdecode(p), reason) for p, reason in failures))
    return out


def _assert_same_library(got: Path, want: Path) -> None:
    """The same rows (ids and metadata too), vectors and tiles' vectors within cosine 0.999,
    the same failures, and the same top 10 for a query of every third class."""
    a, b = _rows(got), _rows(want)
    assert a.pop("failures") == b.pop("failures")
    assert sorted(a) == sorted(b)
    worst = 1.0
    for path, row in b.items():
        other = a[path]
        assert other[:9] == row[:9], path
        for blob, want_blob in ((other[9], row[9]), (other[10], row[10])):
            assert (blob is None) == (want_blob is None), path
            if blob is None:
                continue
            x = np.frombuffer(blob, dtype=np.float32).reshape(-1, len(np.frombuffer(row[9], dtype=np.float32)))
            y = np.frombuffer(want_blob, dtype=np.float32).reshape(x.shape)
            worst = min(worst, float(np.min(np.sum(x * y, axis=1))))
    assert worst >= 0.999, worst
    from photosearch import Library

    with Library.open(got) as left, Library.open(want) as right:
        for colour, shape in synthetic.CLASSES[::3]:
            query = f"a {synthetic.class_name(colour, shape)}"
            _assert_same_hits(left.search(query, k=10), right.search(query, k=10), query)


def _assert_same_hits(got, want, query: str, tie: float = 2e-3) -> None:
    """The same top k, rank by rank, but for photos whose scores are within `tie` of each
    other: a class has 120 pictures here, many all but equally close to its query, and
    vectors within cosine 0.999 (bf16 batches of another shape) may swap such neighbours."""
    assert len(got) == len(want), query
    assert np.allclose([h.score for h in got], [h.score for h in want], atol=tie), query
    for rank, hit in enumerate(want):
        tied = {h.path for h in want if abs(h.score - hit.score) <= tie}
        if len(tied) == 1 and rank < len(want) - 1:  # alone at its score, and not at the cut
            assert got[rank].path == hit.path, (query, rank)
    cut = min(got[-1].score, want[-1].score) + tie
    assert {h.path for h in got if h.score > cut} == {h.path for h in want if h.score > cut}, query


# -- the tests ---------------------------------------------------------------------------------


def test_a_two_node_cluster_builds_the_library_a_single_process_builds(cluster, trained, pictures, single, tmp_path):
    db = tmp_path / "library.db"
    run = _index(pictures, db, trained, "--ray", cluster.address, env=cluster.env)
    assert run.returncode == 3, run.stderr
    assert "Indexing on Ray, 2 nodes: " in run.stderr
    assert "skipping " in run.stderr and "broken.jpg" in run.stderr and "empty.jpg" in run.stderr
    assert f"{_count(pictures)} added" in run.stderr and ", 2 failed." in run.stderr
    _assert_same_library(db, single)


def test_a_node_killed_mid_run_leaves_a_library_equal_to_a_single_process_run(cluster, trained, pictures, single, tmp_path):
    db = tmp_path / "library.db"
    second = cluster.nodes[1]
    assert second.pids(), "the second node should be up"
    total = _count(pictures)
    proc = _start_index(pictures, db, trained, "--ray", cluster.address, env=cluster.env)
    try:
        _wait_for(lambda: _committed(db) >= total // 5, RUN_TIMEOUT_S, "a fifth of the photos committed", proc)
        at_kill = _committed(db)
        # Mid-run, with the driver's workers and actors up on both nodes: still the loopback only.
        during = cluster.assert_loopback_only(proc.pid)
        assert {"raylet", "gcs_server", "python"} <= {name for _, name, *_ in during}, during
        assert any(name.startswith("ray::") for _, name, *_ in during), during  # the workers' own servers
        second.kill()
        assert not _alive(second.raylet_pid), "the second node's raylet should be gone"
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert at_kill < total * 0.8, f"the node was killed too late to be mid-run: {at_kill} of {total} committed"
    assert proc.returncode == 3, err
    assert "left the Ray cluster; its photos go to the other nodes" in err
    _assert_same_library(db, single)


def test_a_killed_driver_is_resumed_by_the_next_run_which_joins_ray_address(cluster, trained, pictures, single, tmp_path):
    db = tmp_path / "library.db"
    total = _count(pictures)
    proc = _start_index(pictures, db, trained, "--ray", cluster.address, env=cluster.env)
    try:
        _wait_for(lambda: _committed(db) >= total // 4, RUN_TIMEOUT_S, "a quarter of the photos committed", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    kept = _committed(db)
    assert total // 4 <= kept < total
    run = _index(pictures, db, trained, "--ray", "auto", env={**cluster.env, "RAY_ADDRESS": cluster.address})
    # The bad files come first (sorted) and were recorded by the first run: known bad now.
    assert run.returncode == 0, run.stderr
    assert f"{total - kept} added" in run.stderr and "0 failed, 2 known bad" in run.stderr, run.stderr
    _assert_same_library(db, single)


def hang_or_crash_on_marked(job):
    """A decode job (run in the cluster's workers, sent by value) whose 'hang' files never
    finish decoding and whose 'crash' files end the worker process."""
    from photosearch.workers import prepare_one

    name = os.path.basename(job[0].path)
    if b"hang" in name:
        time.sleep(3600)
    if b"crash" in name:
        os._exit(1)
    return prepare_one(job)


def test_a_photo_that_hangs_or_crashes_its_decoder_on_the_cluster_is_recorded_and_the_rest_indexed(cluster, trained, tmp_path):
    root = tmp_path / "pics"
    synthetic.write_folder(root, per_class=3, seed=HELDOUT_SEED + 2)
    shutil.copy(root / "img_00000.jpg", root / "hang.jpg")
    shutil.copy(root / "img_00001.jpg", root / "crash.jpg")
    # A driver of its own (Ray reads its authentication settings once a process), with the
    # misbehaving job sent to the workers by value: they can't import tests/.
    script = f"""
import json, os, sys
from pathlib import Path
import ray.cloudpickle
import tests.test_ray
from photosearch.cluster.pipeline import RayPipeline
from photosearch.config import ModelSpec
from photosearch.indexer import index_folders
from photosearch.store import Store

ray.cloudpickle.register_pickle_by_value(tests.test_ray)
store = Store.open(Path({str(tmp_path / "lib.db")!r}), create=True)
summary = index_folders(store, [os.fsencode({str(root)!r})], requested_model=ModelSpec({f"local-dir:{trained}"!r}, None),
                        device="cpu", prepare_job=tests.test_ray.hang_or_crash_on_marked, decode_timeout=3.0,
                        pipeline=RayPipeline({cluster.address!r}))
print(json.dumps([summary.added, {{os.fsdecode(p): r for p, r in summary.failures}}]))
"""
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-c", script], env=cluster.env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - started < 240
    added, reasons = json.loads(run.stdout.strip().splitlines()[-1])
    assert added == 48
    assert reasons.pop(str(root / "hang.jpg")) == "decoding took longer than 3 s; skipped"
    # Ray retries a task whose worker died (a node may have gone); a photo that kills every
    # worker it meets fails as a crash, or, when the retries outlast the time limit, as the
    # local path fails it (its pool never hears back from a dead worker either).
    crash = reasons.pop(str(root / "crash.jpg"))
    assert crash.startswith("cannot decode on the cluster (") or crash == "decoding took longer than 3 s; skipped", crash
    assert reasons == {}


def test_thumbnails_are_made_on_the_nodes_into_the_folder_this_machine_reads(cluster, trained, tmp_path):
    root = tmp_path / "pics"
    synthetic.write_folder(root, per_class=2, seed=HELDOUT_SEED + 3)
    cache = tmp_path / "cache"
    run = _index(root, tmp_path / "lib.db", trained, "--thumbnails", "--ray", cluster.address,
                 env={**cluster.env, "PHOTOSEARCH_CACHE": str(cache)})  # fmt: skip
    assert run.returncode == 0, run.stderr
    made = [p for p in (cache / "thumbnails").rglob("*") if p.is_file()]
    assert len(made) == 32, made
    assert not list((cache / "thumbnails").glob(".ray-check-*"))  # the check's marker is gone


def test_a_node_that_cannot_read_the_photos_is_named_before_any_work(cluster, trained, pictures, tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30).returncode:
        pytest.fail("this test starts a node in its own mount namespace: it needs `unshare -m` (root, or user namespaces)")
    # The node's processes see an empty tmpfs where the photos are: what a node without the
    # shared filesystem (or with it mounted elsewhere) sees.
    blind = cluster.start_node("blind", wrap=["unshare", "-m", "--propagation", "private", "sh", "-c",
                                              f'mount -t tmpfs tmpfs "{pictures}" && exec "$0" "$@"'])  # fmt: skip
    try:
        blind_id = next(node_id for node_id, temp in cluster.node_ids().items() if temp == str(blind.temp_dir))
        assert blind_id == blind.node_id
        cluster.assert_loopback_only()
        db = tmp_path / "library.db"
        run = _index(pictures, db, trained, "--ray", cluster.address, env=cluster.env)
        assert run.returncode == 1, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) <= 2 and lines[-1].startswith("Error: node "), run.stderr
        assert f"({blind_id[:8]}) cannot read {pictures}/" in lines[-1], lines[-1]
        assert "(No such file or directory)" in lines[-1] and "shared filesystem" in lines[-1]
        assert _committed(db) == 0
    finally:
        blind.kill()


def test_ray_alone_starts_a_local_ray_on_the_loopback_for_the_run(trained, pictures, single, tmp_path):
    db = tmp_path / "library.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path)  # Ray keeps a local cluster's token under ~/.ray
    proc = _start_index(pictures, db, trained, "--ray", env=env)
    # Every socket the run's Ray listens on, looked at until the run ends: 127.0.0.1 only.
    # (In Ray's cluster mode, its default on Linux, a local Ray listens on every interface.)
    seen: set[tuple[int, str, str, int]] = set()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        seen.update(_listening(_descendants(proc.pid)))
        time.sleep(0.2)
    try:
        stdout, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    assert proc.returncode == 3, stderr
    assert "Indexing on Ray, 1 node: 127.0.0.1 (" in stderr
    assert {name for _, name, _, _ in seen} >= {"gcs_server", "raylet"}, seen
    assert [entry for entry in seen if entry[2] != "127.0.0.1"] == [], "the local Ray listens beyond 127.0.0.1"
    _assert_same_library(db, single)


def test_ray_without_ray_installed_is_a_one_line_error(tmp_path, pictures):
    script = ("import sys; sys.modules['ray'] = None\n"  # `import ray` now raises ImportError
              "from photosearch.cli import main\n"
              f"sys.argv = ['photosearch', 'index', {str(pictures)!r}, '--db', {str(tmp_path / 'l.db')!r}, '--ray']\n"
              "main()\n")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 1
    assert run.stderr == "Error: --ray needs Ray, which is not installed. Hint: pip install 'photosearch[ray]'.\n"
    assert not (tmp_path / "l.db").exists()


def test_an_address_where_no_cluster_answers_is_a_one_line_error_in_seconds(trained, tmp_path):
    synthetic.write_folder(tmp_path / "pics", per_class=1, seed=HELDOUT_SEED + 4)
    port = _free_port()  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    started = time.monotonic()
    run = _index(tmp_path / "pics", tmp_path / "l.db", trained, "--ray", f"127.0.0.1:{port}", env=env, timeout=120)
    assert run.returncode == 1
    assert run.stderr == (f"Error: nothing answers at 127.0.0.1:{port} (Connection refused). "
                          "Hint: start the cluster with `ray start --head` there, or check the address.\n")  # fmt: skip
    assert time.monotonic() - started < 60
    run = _index(tmp_path / "pics", tmp_path / "l.db", trained, "--ray", "auto", env=env, timeout=120)
    assert run.returncode == 1 and run.stderr.startswith("Error: --ray auto joins the cluster RAY_ADDRESS names, and RAY_ADDRESS is not set.")


@pytest.mark.parametrize(
    "args,expected",
    [
        (["d", "--ray"], "local"),
        (["--ray", "d"], "local"),  # an existing folder is a folder, not an address
        (["d", "--ray", "-q"], "local"),
        (["d", "--ray", "auto"], "auto"),
        (["d", "--ray", "10.0.0.5:6379"], "10.0.0.5:6379"),
        (["d", "--ray=ray://head:10001"], "ray://head:10001"),
    ],
)
def test_ray_takes_an_optional_address(tmp_path, monkeypatch, args, expected):
    from photosearch.cluster import with_ray_value

    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    out = with_ray_value(args)
    if "--ray=" in args[-1]:
        assert out == args
    else:
        assert out[out.index("--ray") + 1] == expected
