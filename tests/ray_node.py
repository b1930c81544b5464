"""One more Ray node on this machine, bound to loopback, in a session of its own (the Ray node-removal test).

``python tests/ray_node.py GCS_ADDRESS RESOURCES_JSON``: joins the cluster whose head listens at GCS_ADDRESS
(127.0.0.1:PORT) as a node with one CPU and the given custom resources, prints ``node <node id>`` once its raylet
is up, and keeps the node until its stdin closes (the test is done with it, or the test process died) or it gets
SIGTERM; then it stops the node's processes. Run it with ``start_new_session=True``: the node's raylet, agents
and workers are then exactly the processes of that session, which is how a test removes the whole node at once.

Why not ``ray start --address=127.0.0.1:PORT``: Ray 2.60 rewrites 127.0.0.1 into the machine's external address
(``services.resolve_ip_for_localhost``) while a head bound to loopback listens on 127.0.0.1 only, so the node
never reaches it. This makes the node the way ``ray.cluster_utils.Cluster.add_node`` does, with the node address
given as is; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (set by ``conftest.py``) keeps Ray's own address guesses on
loopback as well.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any


def main(gcs_address: str, resources: dict[str, float]) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    options: dict[str, Any] = {  # a dict: RayParams annotates include_log_monitor as a str
        "gcs_address": gcs_address, "node_ip_address": "127.0.0.1", "num_cpus": 1, "num_gpus": 0,
        "resources": resources, "object_store_memory": 80 * 1024 * 1024, "include_log_monitor": False,
        "node_manager_port": 0, "min_worker_port": 0, "max_worker_port": 0, "dashboard_agent_listen_port": None,
    }
    params = RayParams(**options)
    # spawn_reaper: the kernel kills the node's processes when this one dies (PR_SET_PDEATHSIG).
    node: Any = Node(params, head=False, shutdown_at_exit=False, spawn_reaper=True)

    def stop(*_: object) -> None:
        node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("node", node.node_id, flush=True)
    sys.stdin.read()
    stop()


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
