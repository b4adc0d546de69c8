"""Before any work: can every node read the photos, and does it have the model's weights?

Workers open photos at the paths the driver sees, so every node needs the same shared
filesystem mounted at the same place. One task pinned to each node (hard node affinity, no
CPU asked, so a busy node answers too) reads the first bytes of a few photos and resolves
the model the way its actors will; the first node that can't is named in the error.
"""

from __future__ import annotations

import contextlib
import os

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from photosearch.cluster import ClusterError
from photosearch.cluster.connect import Node
from photosearch.config import ModelSpec

SAMPLE_SIZE = 3  # photos read on each node: the first, one from the middle and the last to do
ANSWER_TIMEOUT_S = 120.0  # a node that doesn't answer by then is named as unreachable
SHARED_FS_HINT = "every node must see the photos at the paths this machine sees (a shared filesystem, mounted at the same place)"


def sample(paths: list[bytes]) -> list[bytes]:
    """A few paths spread over `paths` (the order the run will take them in)."""
    if len(paths) <= SAMPLE_SIZE:
        return list(paths)
    return [paths[0], paths[len(paths) // 2], paths[-1]]


def unreadable(paths: list[bytes]) -> tuple[bytes, str] | None:
    """The first of `paths` that can't be opened and read here, and why; None if all can."""
    for path in paths:
        try:
            with open(path, "rb") as f:
                f.read(4096)
        except OSError as exc:
            return path, exc.strerror or type(exc).__name__
    return None


def model_problem(spec: ModelSpec, fingerprint: str) -> str | None:
    """Why the model's weights can't be had here, or differ from the driver's; None if fine."""
    from photosearch import model
    from photosearch.errors import PhotosearchError

    try:
        resolved = model.resolve(spec)
        if resolved.fingerprint() != fingerprint:
            return f"its weights for {spec.label()} ({resolved.checkpoint}) are not the driver's"
    except PhotosearchError as exc:
        return exc.message
    return None


def thumbnails_problem(marker: str) -> str | None:
    """Why this node can't write the thumbnails the driver will read (`marker`: a file the
    driver put in its thumbnails folder, which a shared folder shows here too); None if fine."""
    folder = os.path.dirname(marker)
    if not os.path.exists(marker):
        return f"does not see the thumbnails folder {folder} this machine writes (not shared)"
    probe = f"{marker}.{os.getpid()}"
    try:
        with open(probe, "wb"):
            pass
        os.unlink(probe)
    except OSError as exc:
        return f"cannot write thumbnails to {folder} ({exc.strerror or type(exc).__name__})"
    return None


@ray.remote(num_cpus=0, max_retries=0)
def _check_here(paths: list[bytes], spec: ModelSpec, fingerprint: str, thumbnails_marker: str | None) -> tuple[str, str] | None:
    bad = unreadable(paths)
    if bad is not None:
        return "path", f"cannot read {os.fsdecode(bad[0])} ({bad[1]})"
    problem = model_problem(spec, fingerprint)
    if problem:
        return "model", problem
    problem = thumbnails_problem(thumbnails_marker) if thumbnails_marker else None
    return ("thumbnails", problem) if problem else None


def check_nodes(nodes: list[Node], paths: list[bytes], spec: ModelSpec, fingerprint: str, thumbnails: str | None = None,
                timeout_s: float = ANSWER_TIMEOUT_S) -> list[Node]:
    """The nodes to work on: `nodes` but those that turn out to be gone (listed alive, as a
    node is until the cluster's health checks notice its death). Raises ClusterError naming
    the first node (by IP and id) that can't read `paths`, resolve the model's weights or
    (with `thumbnails`, the folder the decode tasks write them to) write thumbnails where
    this machine reads them, or that doesn't answer within `timeout_s`."""
    marker = None
    if thumbnails:
        import secrets

        marker = os.path.join(thumbnails, f".ray-check-{secrets.token_hex(8)}")
        with open(marker, "wb"):
            pass
    try:
        return _check(nodes, paths, spec, fingerprint, marker, timeout_s)
    finally:
        if marker:
            with contextlib.suppress(OSError):
                os.unlink(marker)


def _check(nodes: list[Node], paths: list[bytes], spec: ModelSpec, fingerprint: str, marker: str | None, timeout_s: float) -> list[Node]:
    pending = {
        _check_here.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=False)).remote(paths, spec, fingerprint, marker): node
        for node in nodes
    }
    ready, late = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
    gone = set()
    for ref in ready:
        node = pending[ref]
        try:
            answer = ray.get(ref)
        except (ray.exceptions.TaskUnschedulableError, ray.exceptions.NodeDiedError):
            gone.add(node.id)  # hard affinity to a node that is no more
            continue
        except ray.exceptions.RayError as exc:
            raise ClusterError(f"node {node.name()} could not run the check that it can read the photos: {type(exc).__name__}",
                               "check the node's Ray logs, or leave it out of the cluster") from None  # fmt: skip
        if answer is None:
            continue
        what, detail = answer
        hint = {"path": SHARED_FS_HINT, "model": "install the same weights there (or put them on the shared filesystem)",
                "thumbnails": "put photosearch's cache folder on the shared filesystem (PHOTOSEARCH_CACHE), or index without --thumbnails"}[what]  # fmt: skip
        raise ClusterError(f"node {node.name()} {detail}", hint)
    if late:
        for ref in late:
            ray.cancel(ref, force=True)
        raise ClusterError(f"node {pending[late[0]].name()} did not answer within {timeout_s:g} s",
                           "check that it is up (`ray status`), or leave it out of the cluster")  # fmt: skip
    alive = [node for node in nodes if node.id not in gone]
    if not alive:
        raise ClusterError("every node of the Ray cluster left before the work could start", "check `ray status`")
    return alive
