"""Start one Ray node on the loopback for tests/test_ray.py, print what it is, and exit.

    python -m tests.support.ray_node --temp-dir DIR --num-cpus N --head --port PORT
    python -m tests.support.ray_node --temp-dir DIR --num-cpus N --address 127.0.0.1:PORT

Prints one JSON line: {"address": the GCS address, "node_id": ..., "raylet_pid": ...}. The
node's processes (gcs_server and friends on the head; a raylet, with its own resources, on
every node) outlive this script, as they outlive `ray start`; the test kills them by PID.

Why not `ray start`: Ray 2.60 on Linux resolves `--node-ip-address=127.0.0.1` to the
machine's own address, and its servers then listen on every interface. With
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (Ray's "cluster mode" off, as on macOS and Windows) it
keeps 127.0.0.1, and every server listens there only; but then `ray start --address=...`
refuses to start a second node ("Multi-node Ray clusters are not supported on Windows and
OSX"), a check that lives in the CLI only. Ray's own multi-node-on-one-machine test utility,
`ray.cluster_utils.Cluster.add_node`, starts each node as `ray._private.node.Node(RayParams)`,
without that check; this script does the same, one node per process, so that a node can be
started inside `unshare -m` (the test's node that can't see the photos). The settings are
those of `ray start` (scripts.py) and `Cluster.add_node`, with token authentication set up as
`ray start` sets it up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

LOOPBACK = "127.0.0.1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--num-cpus", type=int, required=True)
    parser.add_argument("--object-store-memory", type=int, default=150_000_000)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--address", help="the head's GCS address, 127.0.0.1:PORT")
    where.add_argument("--head", action="store_true")
    parser.add_argument("--port", type=int, help="the head's GCS port")
    args = parser.parse_args(argv)

    # Before Ray is imported: ray_constants reads it once. Every process the node starts
    # inherits it (the raylet's workers too).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import ray._private.node
    import ray._private.parameter
    from ray._private import ray_constants, services
    from ray._private.authentication.authentication_token_setup import (
        ensure_token_if_auth_enabled,
        maybe_enable_token_auth_if_token_available,
    )

    assert not ray_constants.ENABLE_RAY_CLUSTER  # else Ray would resolve 127.0.0.1 away
    assert services.get_node_ip_address() == LOOPBACK

    params = ray._private.parameter.RayParams(
        node_ip_address=LOOPBACK,
        num_cpus=args.num_cpus,
        num_gpus=0,
        object_store_memory=args.object_store_memory,
        temp_dir=args.temp_dir,
        min_worker_port=0,  # each worker's port picked by the OS (on 127.0.0.1), as in Cluster.add_node
        max_worker_port=0,
        include_dashboard=False,
        dashboard_agent_listen_port=None,  # a free one: several nodes share this machine
    )
    if args.head:
        if args.port is None:
            parser.error("--head needs --port")
        params.update(gcs_server_port=args.port)
        params.update_if_absent(redis_max_clients=None)
        maybe_enable_token_auth_if_token_available()
    else:
        params.update(gcs_address=args.address, include_log_monitor=False, node_manager_port=0)
    ensure_token_if_auth_enabled(None, create_token_if_missing=False)

    node = ray._private.node.Node(
        params, head=args.head, shutdown_at_exit=False, spawn_reaper=False
    )
    raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process
    print(
        json.dumps(
            {"address": node.gcs_address, "node_id": node.node_id, "raylet_pid": raylet.pid}
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
