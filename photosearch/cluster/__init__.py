"""`photosearch index DIR --ray [ADDRESS]`: the per-photo work on a Ray cluster.

The driver (this process) scans, diffs against the library, and stays the only writer of
SQLite: indexer.py does all that as it does for a local run, and commits the results this
package streams back, in order, one transaction a batch. Ray does the rest:

  connect.py   start a local Ray on the loopback (`--ray`), or join one (`--ray auto`,
               `--ray HOST:PORT`); describe its nodes
  check.py     before any work: one task pinned to each node reads a sample of the photos
               and resolves the model's weights there; a node that can't is named
  pipeline.py  decoding as CPU tasks (workers.prepare_one, the local path's job), encoding
               in model actors (a GPU each where the cluster has GPUs, CPU actors
               otherwise), a bounded window of batches in flight, node loss survived

Importing this package doesn't import Ray; only running does (`pip install 'photosearch[ray]'`).
docs/ray.md says how to use it and what was measured.
"""

from __future__ import annotations

import os

from photosearch.errors import PhotosearchError

LOCAL = "local"  # `--ray` alone: a Ray of our own on this machine, stopped when the run ends
AUTO = "auto"  # `--ray auto`: the cluster RAY_ADDRESS names (Ray's own meaning of "auto")
INSTALL_HINT = "pip install 'photosearch[ray]'"


class ClusterError(PhotosearchError):
    """Ray is missing, the cluster can't be joined, or a node can't do its share."""


# Ray resolves a node address of 127.0.0.1 to the machine's own address, and its servers then
# listen on every interface, except where it doesn't support clusters (macOS, Windows): set
# this way, a Ray of our own (`--ray`) stays on the loopback. Read when Ray is imported.
LOOPBACK_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def require_ray(address: str = LOCAL) -> None:
    """Fail at once, in one line, when Ray isn't installed (before any scanning)."""
    import sys

    if address == LOCAL and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ONLY_ENV, "0")
    try:
        import ray  # noqa: F401  (a broken or blocked install must fail here, not mid-run)
    except ImportError:
        raise ClusterError("--ray needs Ray, which is not installed", INSTALL_HINT) from None


def with_ray_value(args: list[str]) -> list[str]:
    """`--ray` takes an optional value, which Typer's parser can't express: a bare `--ray`
    (last, or before another option or a folder) gets LOCAL. The next word is the value
    when it is `local`, `auto`, or an address (`HOST:PORT`, `ray://…`) that isn't also an
    existing path; `--ray=VALUE` is always the value."""
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg != "--ray":
            continue
        nxt = args[i + 1] if i + 1 < len(args) else None
        if nxt is None or not _is_address(nxt):
            out.append(LOCAL)
    return out


def _is_address(word: str) -> bool:
    if word in (LOCAL, AUTO):
        return True
    if word.startswith("-") or os.path.exists(word):
        return False
    return word.startswith("ray://") or ":" in word


def pipeline(address: str):
    """What Library.index hands the indexer for `ray=address` (pipeline.RayPipeline)."""
    require_ray(address)
    from photosearch.cluster.pipeline import RayPipeline

    return RayPipeline(address)
