"""Node failures on demand, for a cluster of several node agents (``devcluster up --nodes 2``).

* ``lose NAME``: the node is gone: its agent and all its pods' processes are SIGKILLed. The
  Lease stops; the node-lifecycle controller marks the Node ``Unknown`` after
  ``--node-monitor-grace-period`` (20 s) and taints it ``node.kubernetes.io/unreachable``.
* ``partition NAME``: only the agent is SIGKILLed: the pods keep running (and writing) with no
  heartbeats, like a node cut off from the control plane: a zombie.
* ``restore NAME``: the agent starts again; before registering it kills every container
  process its predecessor left (:mod:`devcluster.nodeagent.orphans`): those of pods the API
  server deleted or evicted meanwhile, and those of pods still bound to it (they restart, since
  a new agent cannot adopt a process).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from devcluster import cluster
from devcluster.cgroups import MemoryCgroup
from devcluster.config import Paths, agent_component, paths
from devcluster.nodeagent import orphans


def _check_node(p: Paths, node: str) -> None:
    if cluster.node_mode(p) == "kubelet":
        raise SystemExit("devcluster: node commands need node agents, not the kubelet tier")
    names = cluster.cluster_nodes(p)
    if node not in names:
        raise SystemExit(f"devcluster: no node {node!r} in this cluster (it has {names})")


def _kill_agent(p: Paths, node: str) -> int | None:
    """SIGKILL ``node``'s agent (no graceful stop: its pods are not touched); its old pid."""
    name = agent_component(node)
    pid = cluster.running_pid(p, name)
    if pid is None:
        cluster.log(f"{name} is not running")
        return None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while cluster.running_pid(p, name) == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    (p.pids / f"{name}.pid").unlink(missing_ok=True)
    cluster.log(f"killed {name} (pid {pid})")
    return pid


def _agent_cgroups(p: Paths, agent_pid: int) -> list[Path]:
    """The memory cgroup root(s) the agent with ``agent_pid`` created (``run/cgroups``)."""
    try:
        lines = (p.run / "cgroups").read_text().split()
    except OSError:
        return []
    return [Path(ln) for ln in lines if Path(ln).name == f"eio-agent-{agent_pid}"]


def lose(node: str) -> None:
    p = paths()
    with cluster._locked(p):
        _check_node(p, node)
        pid = _kill_agent(p, node)
        killed = orphans.kill_all(p.node_pods(node))
        for base in _agent_cgroups(p, pid) if pid is not None else []:
            for child in base.iterdir() if base.is_dir() else []:
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        MemoryCgroup(child, 1 if "/memory/" in str(base) else 2).kill_all()
    n = sum(len(v) for v in killed.values())
    cluster.log(f"node {node} lost: agent and {n} container process(es) of {len(killed)} pod(s)")


def partition(node: str) -> None:
    p = paths()
    with cluster._locked(p):
        _check_node(p, node)
        _kill_agent(p, node)
    left = orphans.alive(p.node_pods(node))
    cluster.log(
        f"node {node} partitioned: no heartbeats; {len(left)} pod(s) keep running "
        f"(`devcluster node restore {node}` reconciles them)"
    )


def restore(node: str) -> None:
    p = paths()
    with cluster._locked(p):
        _check_node(p, node)
        cluster.ensure_agent(p, node)
    cluster.log(f"node {node} restored (its log: {p.logs / (agent_component(node) + '.log')})")
