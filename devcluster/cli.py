"""``devcluster``: build, start, inspect and stop the local Kubernetes dev cluster.

devcluster build    build/cache etcd, kube-apiserver, kube-scheduler,
                    kube-controller-manager and kubectl in $EIO_CACHE/bin
                    (--node: also kubelet, kube-proxy, containerd and pause for the
                    kubelet tier)
devcluster up       start everything (builds first if needed); no-op when already up
                    (--kubelet: a real kubelet + containerd node instead of the node agent;
                    --nodes N or EIO_DEVCLUSTER_NODES=N: N node agents devnode, devnode-1, ...
                    and the node-lifecycle controller)
devcluster down     stop everything, remove cgroups and the etcd data (--purge: all state)
devcluster status   show each component (exit 1 unless all healthy)
devcluster env      print `export KUBECONFIG=...; export PATH=...` lines (eval them)
devcluster agent    run the node agent in the foreground
devcluster node lose|partition|restore NAME
                    a node gone (agent and pods killed) / cut off (agent killed, pods keep
                    running) / back (agent started; it kills what its predecessor left)
"""

from __future__ import annotations

import argparse
import sys

from devcluster import build as build_mod
from devcluster import cluster


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="devcluster", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build and cache the control-plane binaries")
    b.add_argument("--force", action="store_true", help="rebuild even when cached")
    b.add_argument(
        "--node",
        action="store_true",
        help="also the kubelet tier: kubelet, kube-proxy, containerd, ctr, "
        "containerd-shim-runc-v2, pause",
    )
    u = sub.add_parser("up", help="start the cluster (idempotent)")
    u.add_argument("--no-build", action="store_true", help="fail instead of building")
    u.add_argument("--no-agent", action="store_true", help="do not start the node agent")
    u.add_argument(
        "--kubelet",
        action="store_true",
        help="a real kubelet + containerd + runc node instead of the node agent "
        "(also EIO_DEVCLUSTER_NODE=kubelet; needs root and hack/build-images.sh)",
    )
    u.add_argument(
        "--nodes",
        type=int,
        default=None,
        help="node agents to run (default EIO_DEVCLUSTER_NODES, else 1); more than one turns "
        "the node-lifecycle controller on",
    )
    n = sub.add_parser("node", help="lose, partition or restore a node (several nodes)")
    n.add_argument("action", choices=("lose", "partition", "restore"))
    n.add_argument("name", help="devnode, devnode-1, ...")
    d = sub.add_parser("down", help="stop the cluster")
    d.add_argument("--purge", action="store_true", help="also remove certificates and PV data")
    sub.add_parser("status", help="show component status")
    sub.add_parser("env", help="print shell exports")
    sub.add_parser("agent", help="run the node agent in the foreground", add_help=False)
    sub.add_parser("restart-agent", help="restart the background node agent (kills its pods)")
    return ap


def main(argv: list[str] | None = None) -> None:
    args, rest = _parser().parse_known_args(argv)
    if args.cmd == "build":
        build_mod.build(force=args.force)
        if args.node:
            build_mod.build_node(force=args.force)
    elif args.cmd == "up":
        cluster.up(
            build_if_missing=not args.no_build,
            agent=not args.no_agent,
            kubelet=True if args.kubelet else None,
            nodes=args.nodes,
        )
    elif args.cmd == "node":
        from devcluster import nodeops

        {"lose": nodeops.lose, "partition": nodeops.partition, "restore": nodeops.restore}[
            args.action
        ](args.name)
    elif args.cmd == "down":
        cluster.down(purge=args.purge)
    elif args.cmd == "status":
        sys.exit(cluster.status())
    elif args.cmd == "env":
        print("\n".join(cluster.env_lines()))
    elif args.cmd == "restart-agent":
        cluster.restart_agent()
    elif args.cmd == "agent":
        from devcluster.nodeagent.agent import main as agent_main

        agent_main(rest)


if __name__ == "__main__":
    main()
