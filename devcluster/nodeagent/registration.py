"""The Node object and its heartbeat: registers a Ready Node without taints, renews its Lease
in ``kube-node-lease`` every 10 s (``--heartbeat-seconds``) and refreshes its status every 30 s
(re-registering it when it is gone, dropping not-ready/unreachable taints; a cordon and other
taints stay)."""

from __future__ import annotations

import logging
import platform
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from devcluster import podspec
from devcluster.config import KUBERNETES_VERSION
from devcluster.kube import MERGE_PATCH, Kube
from devcluster.podspec import JSON, now_iso

log = logging.getLogger("nodeagent")

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10
STATUS_SECONDS = 30
# what the node-lifecycle controller (or an admission plugin) sets on a node not heard from
HEALTH_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})


def micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


class NodeRegistration:
    """Node ``node`` with ``cpu`` CPUs, real memory, 110 pods, kubelet endpoint ``port``."""

    def __init__(
        self, kube: Kube, node: str, port: int, cpu: str, heartbeat: float = HEARTBEAT_SECONDS
    ) -> None:
        self.kube = kube
        self.heartbeat = heartbeat
        self.node = node
        self.port = port
        self.cpu = cpu
        self.started_at = now_iso()

    def node_status(self) -> JSON:
        kib = f"{podspec._node_memory() // 1024}Ki"
        t = now_iso()
        conds = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        ]
        return {
            "capacity": {"cpu": self.cpu, "memory": kib, "pods": "110",
                         "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": self.cpu, "memory": kib, "pods": "110",
                            "ephemeral-storage": "100Gi"},
            "conditions": [
                {"type": c, "status": s, "reason": r, "message": "devcluster node agent",
                 "lastHeartbeatTime": t, "lastTransitionTime": self.started_at}
                for c, s, r in conds
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": self._node_info(),
        }  # fmt: skip

    def _node_info(self) -> JSON:
        machine = platform.machine()
        return {
            "machineID": _read("/etc/machine-id"),
            "systemUUID": _read("/etc/machine-id"),
            "bootID": _read("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": platform.release(),
            "osImage": "devcluster node agent on " + platform.system(),
            "containerRuntimeVersion": "devcluster://0.1.0",
            "kubeletVersion": KUBERNETES_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64" if machine == "x86_64" else machine,
        }

    def register(self) -> None:
        core = self.kube.core
        node = self.kube.call(core.read_node, self.node, not_found_ok=True)
        labels = {
            "kubernetes.io/hostname": self.node,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "eio.dev/devcluster": "true",
        }
        if node is None:
            self.kube.call(
                core.create_node,
                {"apiVersion": "v1", "kind": "Node",
                 "metadata": {"name": self.node, "labels": labels}, "spec": {}},
            )  # fmt: skip
        else:
            # clear taints (e.g. node.kubernetes.io/not-ready) and unschedulable
            self.kube.call(
                core.patch_node, self.node,
                {"metadata": {"labels": labels}, "spec": {"taints": None, "unschedulable": None}},
                _content_type=MERGE_PATCH,
            )  # fmt: skip
        self._patch_status()
        log.info("node %s registered and Ready", self.node)

    def heartbeat_loop(self, stop: threading.Event) -> None:
        last_status = 0.0
        while not stop.is_set():
            try:
                self.renew_lease()
                if time.monotonic() - last_status > STATUS_SECONDS:
                    self.refresh_status()
                    last_status = time.monotonic()
            except Exception as e:
                log.warning("heartbeat failed: %s", e)
            stop.wait(self.heartbeat)

    def renew_lease(self) -> None:
        leases = self.kube.coordination
        lease = self.kube.call(leases.read_namespaced_lease, self.node, LEASE_NAMESPACE,
                               not_found_ok=True)  # fmt: skip
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": micro_now()}  # fmt: skip
        if lease is not None:
            self.kube.call(leases.patch_namespaced_lease, self.node, LEASE_NAMESPACE,
                           {"spec": spec}, _content_type=MERGE_PATCH)  # fmt: skip
            return
        node = self.kube.call(self.kube.core.read_node, self.node, not_found_ok=True) or {}
        meta: JSON = {"name": self.node, "namespace": LEASE_NAMESPACE}
        if node.get("metadata", {}).get("uid"):
            meta["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Node", "name": self.node,
                 "uid": node["metadata"]["uid"]}
            ]  # fmt: skip
        self.kube.call(
            leases.create_namespaced_lease, LEASE_NAMESPACE,
            {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
             "spec": spec},
        )  # fmt: skip

    def refresh_status(self) -> None:
        node = self.kube.call(self.kube.core.read_node, self.node, not_found_ok=True)
        if node is None:
            self.register()
            return
        taints = node.get("spec", {}).get("taints") or []
        kept = [t for t in taints if t.get("key") not in HEALTH_TAINTS]
        if len(kept) != len(taints):
            # the node is back: drop the not-ready/unreachable taints, but keep the others and
            # spec.unschedulable (a cordon or `kubectl drain` is the admin's, not ours)
            self.kube.call(self.kube.core.patch_node, self.node,
                           {"spec": {"taints": kept or None}},
                           _content_type=MERGE_PATCH)  # fmt: skip
        self._patch_status()

    def _patch_status(self) -> None:
        self.kube.call(self.kube.core.patch_node_status, self.node,
                       {"status": self.node_status()}, _content_type=MERGE_PATCH)  # fmt: skip
