"""Paths, versions and ports of the local dev cluster (one place, so every module agrees)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Pinned versions. Changing one makes `devcluster build` rebuild the affected binaries.
KUBERNETES_VERSION: Final = "v1.36.3"  # k8s.io/kubernetes; staging modules are v0.<minor>.<patch>
ETCD_VERSION: Final = "v3.6.8"  # go.etcd.io/etcd/server/v3 (the client version k8s 1.36 uses)
CONTAINERD_VERSION: Final = "v2.2.9"  # github.com/containerd/containerd/v2 (kubelet tier)

NODE_NAME: Final = "devnode"
# The kubelet tier's node address: the kubelet refuses a loopback node IP, so a TEST-NET-1
# address (RFC 5737, never routed) on a local interface of this machine.
NODE_IP: Final = "192.0.2.2"
# Pod network of the kubelet tier (CNI bridge, host-local IPAM); private, this machine only.
POD_CIDR: Final = "10.244.77.0/24"
SERVICE_CIDR: Final = "10.0.0.0/24"
SERVICE_IP: Final = "10.0.0.1"
CLUSTER_DOMAIN: Final = "cluster.local"
SA_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
STORAGE_CLASS: Final = "standard"
PROVISIONER: Final = "devcluster.eio.dev/hostpath"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    scheduler: int
    controller_manager: int
    agent: int  # the node agent's kubelet-like HTTPS endpoint (kubectl logs), or the kubelet's
    kubelet_healthz: int  # the kubelet tier's healthz endpoint (127.0.0.1)
    proxy_healthz: int  # the kubelet tier's kube-proxy: healthz (127.0.0.1)
    proxy_metrics: int  # and its metrics (127.0.0.1)
    extra_agents: int = 0  # first port of the extra node agents (devnode-1 at +1, ...)


def ports() -> Ports:
    """Ports on 127.0.0.1, away from the usual defaults so a real cluster does not clash.

    ``EIO_DEVCLUSTER_PORT_BASE`` (default 16400) moves all of them at once.
    """
    base = _env_int("EIO_DEVCLUSTER_PORT_BASE", 16400)
    return Ports(
        etcd_client=base + 79,
        etcd_peer=base + 80,
        apiserver=base + 43,
        scheduler=base + 59,
        controller_manager=base + 57,
        agent=base + 50,
        kubelet_healthz=base + 48,
        proxy_healthz=base + 56,
        proxy_metrics=base + 49,
        extra_agents=base + 60,
    )


MAX_NODES: Final = 10  # the extra agents' ports are base+61 .. base+69


def node_names(count: int) -> list[str]:
    """The node agents of a cluster of ``count`` nodes: ``devnode`` (the single-node default,
    unchanged) then ``devnode-1``, ``devnode-2``, ..."""
    if not 1 <= count <= MAX_NODES:
        raise ValueError(f"node count must be 1..{MAX_NODES}, got {count}")
    return [NODE_NAME, *(f"{NODE_NAME}-{i}" for i in range(1, count))]


def node_index(node: str) -> int:
    """0 for ``devnode``, ``i`` for ``devnode-i``; ValueError for any other name."""
    if node == NODE_NAME:
        return 0
    prefix = f"{NODE_NAME}-"
    tail = node[len(prefix) :] if node.startswith(prefix) else ""
    if not tail.isdigit() or not 1 <= int(tail) < MAX_NODES:
        raise ValueError(f"not a dev-cluster node name: {node!r} (devnode, devnode-1, ...)")
    return int(tail)


def agent_component(node: str) -> str:
    """The component (pid file and log name) of ``node``'s agent: ``nodeagent`` for
    ``devnode`` as before, ``nodeagent-devnode-1`` for the others."""
    return "nodeagent" if node_index(node) == 0 else f"nodeagent-{node}"


def agent_port(pt: Ports, node: str) -> int:
    i = node_index(node)
    return pt.agent if i == 0 else pt.extra_agents + i


@dataclass(frozen=True)
class Paths:
    cache: Path  # $EIO_CACHE: build cache and run state, outside the repo

    @property
    def bin(self) -> Path:
        return self.cache / "bin"

    @property
    def build(self) -> Path:
        return self.cache / "build"

    @property
    def run(self) -> Path:
        """Run state of one cluster. ``EIO_DEVCLUSTER_RUN`` gives a second cluster its own
        (with its own ``EIO_DEVCLUSTER_PORT_BASE``) while the binaries stay shared."""
        override = os.environ.get("EIO_DEVCLUSTER_RUN", "").strip()
        return Path(override) if override else self.cache / "run"

    @property
    def pki(self) -> Path:
        return self.run / "pki"

    @property
    def logs(self) -> Path:
        return self.run / "logs"

    @property
    def pids(self) -> Path:
        return self.run / "pids"

    @property
    def kubeconfig(self) -> Path:
        return self.run / "kubeconfig"

    @property
    def pods(self) -> Path:
        """Per-pod state: volumes, token files, container logs."""
        return self.run / "pods"

    def node_pods(self, node: str) -> Path:
        """Per-pod state of one node agent: ``pods`` for ``devnode`` (as before), each other
        node its own ``nodes/<node>/pods``."""
        return self.pods if node_index(node) == 0 else self.run / "nodes" / node / "pods"

    @property
    def volumes(self) -> Path:
        """Backing directories of dynamically provisioned PersistentVolumes."""
        return self.cache / "volumes"

    @property
    def etcd_data(self) -> Path:
        shm = Path(os.environ.get("EIO_DEVCLUSTER_SHM", "/dev/shm"))
        # one per port base, so a second cluster (another EIO_CACHE and port base) can run
        return shm / f"eio-devcluster-{os.getuid()}-{ports().etcd_client}" / "etcd"


def paths() -> Paths:
    cache = os.environ.get("EIO_CACHE") or str(Path.home() / ".cache" / "eio-devcluster")
    return Paths(Path(cache))


def venv_bin() -> Path:
    """The bin/ directory of the interpreter running us (the project's venv)."""
    return Path(sys.prefix) / "bin"
