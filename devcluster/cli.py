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
from typing import Any

from devcluster import build as build_mod
from devcluster import cluster

_FLAG = {"action": "store_true"}
# subcommand -> (help, its arguments as (name, add_argument keywords))
_COMMANDS: dict[str, tuple[str, list[tuple[str, dict[str, Any]]]]] = {
    "build": ("build and cache the control-plane binaries", [
        ("--force", {**_FLAG, "help": "rebuild even when cached"}),
        ("--node", {**_FLAG, "help": "also the kubelet tier: kubelet, kube-proxy, containerd, "
                    "ctr, containerd-shim-runc-v2, pause"}),
    ]),
    "up": ("start the cluster (idempotent)", [
        ("--no-build", {**_FLAG, "help": "fail instead of building"}),
        ("--no-agent", {**_FLAG, "help": "do not start the node agent"}),
        ("--kubelet", {**_FLAG, "help": "a real kubelet + containerd + runc node instead of the "
                       "node agent (also EIO_DEVCLUSTER_NODE=kubelet; needs root and "
                       "hack/build-images.sh)"}),
        ("--nodes", {"type": int, "default": None, "help": "node agents to run (default "
                     "EIO_DEVCLUSTER_NODES, else 1); more than one turns the node-lifecycle "
                     "controller on"}),
    ]),
    "node": ("lose, partition or restore a node (several nodes)", [
        ("action", {"choices": ("lose", "partition", "restore")}),
        ("name", {"help": "devnode, devnode-1, ..."}),
    ]),
    "down": ("stop the cluster", [
        ("--purge", {**_FLAG, "help": "also remove certificates and PV data"}),
    ]),
    "status": ("show component status", []),
    "env": ("print shell exports", []),
    "restart-agent": ("restart the background node agent (kills its pods)", []),
}  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="devcluster", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd, (text, arguments) in _COMMANDS.items():
        p = sub.add_parser(cmd, help=text)
        for name, keywords in arguments:
            p.add_argument(name, **keywords)
    sub.add_parser("agent", help="run the node agent in the foreground", add_help=False)
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
