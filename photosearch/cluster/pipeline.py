"""The per-photo work of an index run on a Ray cluster, streamed back to the driver in order.

Why Ray Core and not Ray Data: the driver must get every photo back, in the order of the
plan, as (metadata, vector, tiles' vectors) to commit batch by batch exactly as the local
path does, and a photo must be able to fail on its own (recorded, the run going on). With
Ray Core that is a window of batches: each batch of `--batch-size` photos is one decode task
(the local path's own job, workers.prepare_one, run as a CPU task) whose output goes straight
to a model actor (ObjectRef passed as argument: pixels move node to node, never through the
driver; only metadata and vectors come back). At most `window` batches are in flight, which is
the back-pressure: nothing is decoded far ahead of the model, and the driver holds no more
than that. Ray Data would add pyarrow blocks, its own batching and reordering to undo, and an
actor pool whose retries we don't steer, for no gain in a two-stage pipeline.

Failures:
  * A node dies: its decode tasks are retried elsewhere by Ray (`max_retries`, lineage
    reconstruction for outputs it held); its model actor is not restarted in place
    (`max_restarts=0`: a restarted actor waits for resources a busy cluster may never free,
    and its queued calls with it). The driver notices the actor's death, says which node left,
    and resubmits every batch that actor held to the actors still alive.
  * A batch whose decoding fails (a crashing decoder) or outlives the time limit
    (`--decode-timeout`, counted from when it is the oldest batch, as the local path counts it
    for a photo) is split into single photos, each then given the same limit; a single photo
    that fails so is recorded as failed, as the local path records it (a hanging photo is
    found within twice the limit). `ray.cancel(force=True)` ends a task stuck in a decoder.
  * The model failing on a batch (not its decoding) ends the run with an error, as it does
    locally: it would fail every photo the same way.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from photosearch.cluster import ClusterError, check, connect
from photosearch.results import IndexEvent
from photosearch.workers import Prepared

DECODE_RETRIES = 3  # a decode task lost with its node is run again elsewhere, this many times
ACTOR_START_TIMEOUT_S = 600.0  # loading the model on every node: first-time downloads included
POLL_S = 1.0  # how often the driver looks at the oldest batch's decoding while it waits


@ray.remote(max_retries=DECODE_RETRIES)
def _decode(jobs: list[tuple], job: Callable[[tuple], Prepared]) -> list[Prepared]:
    """A batch's photos through the local path's decode job, in this task's process."""
    return [job(args) for args in jobs]


@ray.remote(max_restarts=0, max_task_retries=0)
class _ModelActor:
    """The image tower on one node (or one GPU), loaded from the weights resolved there."""

    def __init__(self, spec, fingerprint: str, device: str, precision: str | None, crops: str, threads: int | None):
        from photosearch import model

        problem = check.model_problem(spec, fingerprint)
        if problem:
            raise ClusterError(problem)
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.encoder = model.load_encoder(model.resolve(spec), device, precision, ("image",))
        self.crops = crops

    def facts(self) -> tuple[int, float, str]:
        return self.encoder.dim, self.encoder.logit_scale, ray.get_runtime_context().get_node_id()

    def encode(self, batch: list[Prepared]) -> tuple[list[Prepared], list]:
        from photosearch.indexer import _encode  # the local path's own batching of tiles

        vectors = _encode(self.encoder, batch, self.crops)
        for item in batch:
            item.pixels = None  # the driver needs metadata and vectors only
        return batch, vectors


@dataclass
class _Actor:
    handle: object
    node: connect.Node
    cpus: float  # what it reserves: decode tasks get the rest
    alive: bool = True
    queued: int = 0


@dataclass
class _Unit:
    """A batch in flight: its photos' jobs, the decode task and the actor call."""

    jobs: list[tuple]
    decoded: object
    encoded: object
    actor: _Actor
    head_since: float | None = None  # when it became the oldest batch (its time limit runs)


class RayPipeline:
    """The indexer's `pipeline` for `Library.index(ray=address)` (indexer._store_from_pipeline)."""

    def __init__(self, address: str):
        self.address = address

    @contextlib.contextmanager
    def start(self, resolved, how, work, todo, on_event: Callable[[IndexEvent], None]) -> Iterator["_ClusterRun"]:
        """Join or start Ray, check every node, load the model on each; yields a run whose
        `dim`/`logit_scale` are the model's and whose `results` stream the work back."""
        with connect.connected(self.address):
            nodes = connect.alive_nodes()
            if not nodes:
                raise ClusterError("the Ray cluster has no live nodes", "check `ray status`")
            nodes = check.check_nodes(nodes, check.sample([f.path for f, _ in todo]), resolved.spec, resolved.fingerprint(),
                                      how.thumbnails)  # fmt: skip
            run = _ClusterRun(resolved, how, work, nodes, on_event)
            try:
                yield run
            finally:
                run.close()


class _ClusterRun:
    def __init__(self, resolved, how, work, nodes: list[connect.Node], on_event):
        self.how, self.work, self.on_event = how, work, on_event
        self.actors = self._start_actors(resolved, work, nodes)
        facts = self._wait_for_actors()
        self.dim, self.logit_scale = facts[0][0], facts[0][1]
        decode_slots = max(1, int(sum(n.cpus for n in nodes) - sum(a.cpus for a in self.actors)))
        self.window = max(2, 2 * (decode_slots + len(self.actors)))  # batches in flight
        self._report_nodes()

    # -- the model actors -------------------------------------------------------------------
    @staticmethod
    def _cpus_of(node: connect.Node) -> float:
        """A CPU node's model actor takes half its CPUs (decoding a photo costs about what
        embedding it does, DESIGN.md §5); a one-CPU node shares its CPU (0 reserved)."""
        return float(max(1, int(node.cpus) // 2)) if node.cpus >= 2 else 0.0

    def _start_actors(self, resolved, work, nodes: list[connect.Node]) -> list[_Actor]:
        spec, fingerprint, crops = resolved.spec, resolved.fingerprint(), self.how.crops
        gpus = int(sum(n.gpus for n in nodes))
        actors = []
        if gpus and work.device in ("auto", "cuda"):
            by_gpu = [n for n in nodes for _ in range(int(n.gpus))]
            for node in by_gpu:  # one actor a GPU, placed by Ray where a GPU is free
                handle = _ModelActor.options(num_gpus=1, num_cpus=1).remote(spec, fingerprint, "cuda", work.precision, crops, None)
                actors.append(_Actor(handle, node, 1.0))
            return actors
        for node in nodes:
            if node.cpus <= 0:
                continue
            cpus = self._cpus_of(node)
            strategy = NodeAffinitySchedulingStrategy(node.id, soft=True)
            handle = _ModelActor.options(num_cpus=cpus, scheduling_strategy=strategy).remote(
                spec, fingerprint, "cpu", work.precision, crops, int(cpus) or 1)
            actors.append(_Actor(handle, node, cpus))
        if not actors:
            raise ClusterError("the Ray cluster has no CPUs or GPUs to run the model on", "check `ray status`")
        return actors

    def _wait_for_actors(self) -> list[tuple]:
        refs = [a.handle.facts.remote() for a in self.actors]
        ready, late = ray.wait(refs, num_returns=len(refs), timeout=ACTOR_START_TIMEOUT_S)
        facts = []
        for actor, ref in zip(self.actors, refs, strict=True):
            if ref not in ready:
                raise ClusterError(f"the model did not load on node {actor.node.name()} within {ACTOR_START_TIMEOUT_S:g} s",
                                   "check the node's resources (`ray status`) and logs")  # fmt: skip
            try:
                facts.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                raise ClusterError(f"the model could not load on node {actor.node.name()}: {_cause(exc)}",
                                   "check that photosearch and its model are installed there as here") from None  # fmt: skip
        by_id = {n.id: n for n in (a.node for a in self.actors)}
        for actor, (_, _, node_id) in zip(self.actors, facts, strict=True):
            actor.node = by_id.get(node_id, connect.Node(node_id, actor.node.ip, actor.node.cpus, actor.node.gpus))
        return facts

    def _live(self) -> list[_Actor]:
        return [a for a in self.actors if a.alive]

    def _report_nodes(self) -> None:
        nodes = sorted({a.node for a in self._live()}, key=lambda n: (n.ip, n.id))
        names = ", ".join(n.name() for n in nodes)
        self.on_event(IndexEvent("cluster", reason=f"{len(nodes)} node{'s' * (len(nodes) != 1)}: {names}", total=len(nodes)))

    def _lost(self, actor: _Actor, units: deque[_Unit]) -> None:
        """An actor died (its node left, or its process): its batches go to the others."""
        if actor.alive:
            actor.alive = False
            if not self._live():
                raise ClusterError(f"node {actor.node.name()} left the cluster and no node is left to run the model",
                                   "rerun when the cluster is back: what was committed is kept")  # fmt: skip
            self.on_event(IndexEvent("warning", reason=f"node {actor.node.name()} left the Ray cluster; its photos go to the other nodes"))
            self._report_nodes()
        for i, unit in enumerate(units):
            if not unit.actor.alive:  # decoded again too: the outputs may have gone with the node
                units[i] = self._submit(unit.jobs)

    def close(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor.handle)

    # -- the work ---------------------------------------------------------------------------
    def _submit(self, jobs: list[tuple]) -> _Unit:
        actor = min(self._live(), key=lambda a: a.queued)
        actor.queued += 1
        decoded = _decode.remote(jobs, self.work.prepare_job)
        return _Unit(jobs, decoded, actor.handle.encode.remote(decoded), actor)

    def results(self, todo, fingerprints) -> Iterator[tuple[list[Prepared], list]]:
        """(photos, their vectors) a batch at a time, in the order of `todo`: each photo's
        Prepared (pixels dropped), and for the decoded ones (vector, tiles' vectors)."""
        size = max(1, self.work.batch_size)
        jobs = [(f, existed, self.how, fingerprints.get(f.path)) for f, existed in todo]
        batches = (jobs[i : i + size] for i in range(0, len(jobs), size))
        units: deque[_Unit] = deque()
        limit_s = self.work.decode_timeout
        while True:
            while len(units) < self.window:
                batch = next(batches, None)
                if batch is None:
                    break
                units.append(self._submit(batch))
            if not units:
                return
            head = units[0]
            if head.head_since is None:
                head.head_since = time.monotonic()
            outcome, value = self._outcome(head, head.head_since + limit_s)
            if outcome == "waiting":
                continue
            if outcome == "actor-lost":
                self._lost(head.actor, units)
                continue
            units.popleft()
            head.actor.queued -= 1
            if outcome == "done":
                yield value
                continue
            if len(head.jobs) > 1:  # failed or too slow as a batch: each photo on its own
                for job in reversed(head.jobs):
                    units.appendleft(self._submit([job]))
                continue
            file, existed = head.jobs[0][0], head.jobs[0][1]
            reason = f"decoding took longer than {limit_s:g} s; skipped" if outcome == "timeout" else value
            yield [Prepared(file, existed, reason=reason)], []

    def _outcome(self, unit: _Unit, deadline: float) -> tuple[str, object]:
        """Wait up to POLL_S for `unit`: ('done', result), ('actor-lost', None),
        ('failed', reason), ('timeout', None), or ('waiting', None) to be asked again."""
        ready, _ = ray.wait([unit.encoded], timeout=POLL_S)
        if ready:
            try:
                return "done", ray.get(unit.encoded)
            except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError, ray.exceptions.RayActorError):
                return "actor-lost", None
            except ray.exceptions.RayError as exc:
                if str(getattr(exc, "function_name", "")).endswith("encode"):  # not its decoding
                    raise ClusterError(f"the model failed on node {unit.actor.node.name()}: {_cause(exc)}",
                                       "rerun with PHOTOSEARCH_DEBUG=1, and see the node's Ray logs") from None  # fmt: skip
                return "failed", f"cannot decode on the cluster ({_cause(exc)})"
        if time.monotonic() > deadline and not ray.wait([unit.decoded], timeout=0)[0]:
            ray.cancel(unit.decoded, force=True)  # ends a worker stuck in a decoder
            return "timeout", None
        return "waiting", None


def _cause(exc: BaseException) -> str:
    """One line for a Ray error: the exception inside a task error, else Ray's own."""
    inner = getattr(exc, "cause", None)
    if isinstance(inner, BaseException) and inner is not exc:
        text = getattr(inner, "message", None) or str(inner)
        return f"{type(inner).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}".rstrip(": ")
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
