"""Start a local Ray or join a cluster, and say which nodes it has.

`--ray` alone starts a Ray of our own on the loopback (127.0.0.1, no dashboard, no usage
statistics), as many CPUs as this process may use; `ray.shutdown()` stops it with the run.
`--ray auto` joins the cluster of RAY_ADDRESS, `--ray HOST:PORT` (or `ray://HOST:PORT`,
Ray Client) the one named; leaving only disconnects. A driver that joins a cluster must run
on one of its nodes (Ray's rule for `HOST:PORT`), usually the head.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from photosearch.cluster import AUTO, LOCAL, ClusterError


@dataclass(frozen=True)
class Node:
    id: str  # Ray's node id (hex)
    ip: str
    cpus: float
    gpus: float

    def name(self) -> str:
        """How messages name a node: its IP and the start of its id (several nodes can
        share an IP, as on a test machine)."""
        return f"{self.ip} ({self.id[:8]})"


def alive_nodes() -> list[Node]:
    """The cluster's nodes that are up now, in a stable order (by IP, then id)."""
    import ray

    nodes = [
        Node(n["NodeID"], n["NodeManagerAddress"], float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
        for n in ray.nodes()
        if n.get("Alive")
    ]
    return sorted(nodes, key=lambda n: (n.ip, n.id))


def _loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def connected(address: str) -> Iterator[None]:
    """Ray initialised for `address` (LOCAL, AUTO, or HOST:PORT) while inside; a Ray this
    process had already initialised (a Python caller's own) is used as it is and left up."""
    import ray

    if ray.is_initialized():
        yield
        return
    options: dict = {"logging_level": logging.WARNING, "log_to_driver": False}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home unless asked
    if address == LOCAL:
        # Ray says at length that a new local Ray has token authentication on (its default).
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        from photosearch.config import usable_cpus

        options.update(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=usable_cpus())
    else:
        target = os.environ.get("RAY_ADDRESS", "") if address == AUTO else address
        if address == AUTO and not target:
            raise ClusterError("--ray auto joins the cluster RAY_ADDRESS names, and RAY_ADDRESS is not set",
                               "export RAY_ADDRESS=HOST:PORT of the head node, or pass --ray HOST:PORT")  # fmt: skip
        options["address"] = address
        _check_reachable(target)
        if _loopback(target) and not target.startswith("ray://"):
            options["_node_ip_address"] = "127.0.0.1"  # the raylet to attach to is on the loopback too
    try:
        ray.init(**options)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError, grpc errors...
        where = "start a local Ray" if address == LOCAL else f"join the Ray cluster at {options.get('address')}"
        raise ClusterError(f"could not {where}: {_first_line(exc)}",
                           "check the address, that `ray start --head` runs there and that this machine is a "
                           "node of the cluster; with token authentication (Ray's default) set RAY_AUTH_MODE=token "
                           "and RAY_AUTH_TOKEN" if address != LOCAL else "see `ray start --help`") from None  # fmt: skip
    try:
        yield
    finally:
        ray.shutdown()


PROBE_TIMEOUT_S = 5.0


def _check_reachable(target: str) -> None:
    """Fail in seconds when nothing listens at HOST:PORT: Ray itself would retry for minutes,
    printing a warning a second."""
    import socket

    host, sep, port = target.split("://")[-1].rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterError(f"{target!r} is not a Ray address", "use --ray HOST:PORT (the head's GCS port, 6379 by default), --ray auto or --ray alone")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterError(f"nothing answers at {target} ({exc.strerror or type(exc).__name__})",
                           "start the cluster with `ray start --head` there, or check the address") from None  # fmt: skip


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
