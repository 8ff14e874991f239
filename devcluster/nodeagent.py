"""The node agent: plays the kubelet for one Node of the dev cluster.

* registers a Ready Node (no taints), renews its Lease and refreshes its status;
* runs each container of the pods bound to the node as a local process (see
  :mod:`devcluster.launcher`): image -> local entry point (:class:`podspec.ImageMap`), env,
  volumes bind-mounted at their mountPath in a private mount namespace, the service-account
  token at /var/run/secrets/kubernetes.io/serviceaccount, runAsUser/runAsGroup;
* enforces ``limits.memory`` with a real memory cgroup per container (v1 or v2), and
  reports ``OOMKilled`` when the cgroup recorded an OOM kill; without writable cgroups it
  polls RSS and kills over-limit processes (reported the same way);
* reports pod status through the status subresource, restarts containers per
  restartPolicy, honours deletion (SIGTERM, grace period, SIGKILL, then removes the pod);
* provisions PersistentVolumes for PVCs of the ``standard`` StorageClass (hostPath
  directories under ``$EIO_CACHE/volumes``);
* serves ``kubectl logs`` on its HTTPS port (``/containerLogs/...``).

Run by ``devcluster up`` (or ``devcluster agent`` in the foreground).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import platform
import pwd
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from kubernetes.client.exceptions import ApiException

from devcluster import podspec
from devcluster.cgroups import CgroupManager, MemoryCgroup, detect
from devcluster.config import (
    KUBERNETES_VERSION,
    NODE_NAME,
    PROVISIONER,
    paths,
    venv_bin,
)
from devcluster.kube import MERGE_PATCH, ApiError, Kube
from devcluster.podspec import JSON, StartError, now_iso

log = logging.getLogger("nodeagent")

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
LAUNCHER = str(Path(__file__).with_name("launcher.py"))
TERMINAL = ("Succeeded", "Failed")


def micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ------------------------------------------------------------------------------------------
# volumes
# ------------------------------------------------------------------------------------------
def _write_file(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)


def _project_items(
    target: Path, data: dict[str, bytes], items: list[JSON] | None, mode: int, what: str
) -> None:
    if items:
        for it in items:
            if it["key"] not in data:
                raise StartError("CreateContainerConfigError",
                                 f"couldn't find key {it['key']} in {what}")  # fmt: skip
            _write_file(target / it["path"], data[it["key"]], int(it.get("mode") or mode))
    else:
        for k, v in data.items():
            _write_file(target / k, v, mode)


class Agent:
    """The node agent. ``run()`` blocks until SIGTERM/SIGINT."""

    def __init__(
        self,
        kube: Kube,
        node_name: str = NODE_NAME,
        port: int = 0,
        image_map: podspec.ImageMap | None = None,
        cpu: str | None = None,
    ) -> None:
        self.kube = kube
        self.node = node_name
        self.port = port
        self.paths = paths()
        self.images = image_map or podspec.ImageMap(bin_dir=venv_bin())
        self.cpu = cpu or str(max(os.cpu_count() or 1, 8))
        self.stop = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.cgroups: CgroupManager | None
        if os.environ.get("EIO_DEVCLUSTER_NO_CGROUPS"):
            self.cgroups, why = None, "disabled by EIO_DEVCLUSTER_NO_CGROUPS"
        else:
            self.cgroups, why = detect(self.paths.run)
        if self.cgroups is None:
            log.warning("memory cgroups not writable (%s): falling back to RSS polling", why)
        else:
            log.info("memory limits enforced with %s", why)
        api = urlparse(kube.host)
        self.api_host = api.hostname or "127.0.0.1"
        self.api_port = api.port or 443
        self.ca_file = self.paths.pki / "ca.crt"

    # -- API helpers --------------------------------------------------------------------
    def lookup_configmap(self, ns: str, name: str) -> dict[str, str] | None:
        cm = self.kube.call(self.kube.core.read_namespaced_config_map, name, ns,
                            not_found_ok=True)
        if cm is None:
            return None
        return dict(cm.get("data") or {})

    def lookup_secret(self, ns: str, name: str) -> dict[str, str] | None:
        s = self.kube.call(self.kube.core.read_namespaced_secret, name, ns, not_found_ok=True)
        return None if s is None else podspec.decode_secret_data(s)

    def event(self, pod: JSON, reason: str, message: str, type_: str = "Normal") -> None:
        meta = pod["metadata"]
        ns = meta["namespace"]
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": ns},
            "involvedObject": {
                "kind": "Pod",
                "apiVersion": "v1",
                "namespace": ns,
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": "kubelet", "host": self.node},
            "firstTimestamp": now_iso(),
            "lastTimestamp": now_iso(),
            "count": 1,
            "reportingComponent": "kubelet",
            "reportingInstance": self.node,
        }
        try:
            self.kube.call(self.kube.core.create_namespaced_event, ns, body)
        except Exception as e:  # events are best effort
            log.debug("event %s failed: %s", reason, e)

    # -- node -----------------------------------------------------------------------------
    def node_status(self) -> JSON:
        mem = podspec._node_memory()
        kib = f"{mem // 1024}Ki"
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
            "nodeInfo": {
                "machineID": _read("/etc/machine-id"),
                "systemUUID": _read("/etc/machine-id"),
                "bootID": _read("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": platform.release(),
                "osImage": "devcluster node agent on " + platform.system(),
                "containerRuntimeVersion": "devcluster://0.1.0",
                "kubeletVersion": KUBERNETES_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64" if platform.machine() == "x86_64" else platform.machine(),
            },
        }  # fmt: skip

    def register_node(self) -> None:
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
        self.kube.call(core.patch_node_status, self.node, {"status": self.node_status()},
                       _content_type=MERGE_PATCH)  # fmt: skip
        log.info("node %s registered and Ready", self.node)

    def heartbeat_loop(self) -> None:
        leases, core = self.kube.coordination, self.kube.core
        last_status = 0.0
        while not self.stop.is_set():
            try:
                lease = self.kube.call(leases.read_namespaced_lease, self.node, "kube-node-lease",
                                       not_found_ok=True)
                spec = {"holderIdentity": self.node, "leaseDurationSeconds": 40,
                        "renewTime": micro_now()}  # fmt: skip
                if lease is None:
                    node = self.kube.call(core.read_node, self.node, not_found_ok=True) or {}
                    meta: JSON = {"name": self.node, "namespace": "kube-node-lease"}
                    if node.get("metadata", {}).get("uid"):
                        meta["ownerReferences"] = [
                            {
                                "apiVersion": "v1",
                                "kind": "Node",
                                "name": self.node,
                                "uid": node["metadata"]["uid"],
                            }
                        ]
                    self.kube.call(
                        leases.create_namespaced_lease, "kube-node-lease",
                        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "metadata": meta, "spec": spec},
                    )  # fmt: skip
                else:
                    self.kube.call(leases.patch_namespaced_lease, self.node, "kube-node-lease",
                                   {"spec": spec}, _content_type=MERGE_PATCH)
                if time.monotonic() - last_status > 30:
                    node = self.kube.call(core.read_node, self.node, not_found_ok=True)
                    if node is None or node.get("spec", {}).get("taints"):
                        self.register_node()
                    else:
                        self.kube.call(core.patch_node_status, self.node,
                                       {"status": self.node_status()}, _content_type=MERGE_PATCH)
                    last_status = time.monotonic()
            except Exception as e:
                log.warning("heartbeat failed: %s", e)
            self.stop.wait(10)

    # -- pods -----------------------------------------------------------------------------
    def pod_loop(self) -> None:
        selector = f"spec.nodeName={self.node}"
        while not self.stop.is_set():
            try:
                lst = self.kube.call(self.kube.core.list_pod_for_all_namespaces,
                                     field_selector=selector)
                seen = set()
                for pod in lst.get("items") or []:
                    seen.add(pod["metadata"]["uid"])
                    self.on_pod(pod)
                with self.lock:
                    gone = [uid for uid in self.workers if uid not in seen]
                for uid in gone:
                    self.on_deleted(uid)
                rv = lst["metadata"]["resourceVersion"]
                for ev in self.kube.watch_pods(selector, rv, 50):
                    if self.stop.is_set():
                        break
                    typ, obj = ev.get("type"), ev.get("object") or {}
                    if typ in ("ADDED", "MODIFIED"):
                        self.on_pod(obj)
                    elif typ == "DELETED":
                        self.on_deleted(obj["metadata"]["uid"])
            except ApiException as e:  # Watch raises an ERROR event, e.g. 410 Gone
                if e.status != 410:  # 410: resourceVersion too old, relist at once
                    log.warning("pod watch failed: %s; relisting", e)
                    self.stop.wait(1)
            except Exception as e:
                log.warning("pod watch failed: %s; relisting", e)
                self.stop.wait(1)

    def on_pod(self, pod: JSON) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self.lock:
            w = self.workers.get(uid)
            if w is not None:
                w.update(pod)
                return
            phase = (pod.get("status") or {}).get("phase")
            if phase in TERMINAL:
                if meta.get("deletionTimestamp"):
                    threading.Thread(target=self.delete_pod, args=(pod,), daemon=True).start()
                return
            w = PodWorker(self, pod)
            self.workers[uid] = w
        w.start()

    def on_deleted(self, uid: str) -> None:
        with self.lock:
            w = self.workers.pop(uid, None)
        if w is not None:
            w.removed()

    def forget(self, uid: str) -> None:
        with self.lock:
            self.workers.pop(uid, None)

    def delete_pod(self, pod: JSON) -> None:
        meta = pod["metadata"]
        try:
            self.kube.call(
                self.kube.core.delete_namespaced_pod, meta["name"], meta["namespace"],
                body={"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                      "preconditions": {"uid": meta["uid"]}},
                not_found_ok=True,
            )  # fmt: skip
        except ApiError as e:
            if e.status != 409:  # 409: precondition failed, a newer pod of that name
                log.warning("deleting pod %s/%s: %s", meta["namespace"], meta["name"], e)

    # -- persistent volumes ---------------------------------------------------------------
    def provisioner_loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.provision_once()
            except Exception as e:
                log.warning("provisioner: %s", e)
            self.stop.wait(2)

    def provision_once(self) -> None:
        core = self.kube.core
        pvcs = self.kube.call(core.list_persistent_volume_claim_for_all_namespaces)["items"]
        for pvc in pvcs:
            meta, spec = pvc["metadata"], pvc.get("spec") or {}
            ann = meta.get("annotations") or {}
            ours = ann.get("volume.kubernetes.io/storage-provisioner") == PROVISIONER or (
                ann.get("volume.beta.kubernetes.io/storage-provisioner") == PROVISIONER
            )
            if (
                not ours
                or spec.get("volumeName")
                or (pvc.get("status") or {}).get("phase") not in (None, "Pending")
            ):
                continue
            name = f"pvc-{meta['uid']}"
            if self.kube.call(core.read_persistent_volume, name, not_found_ok=True) is not None:
                continue
            d = self.paths.volumes / name
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o777)
            size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
            pv = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name,
                             "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": spec.get("storageClassName"),
                    "volumeMode": spec.get("volumeMode") or "Filesystem",
                    "hostPath": {"path": str(d), "type": "DirectoryOrCreate"},
                    "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                 "namespace": meta["namespace"], "name": meta["name"],
                                 "uid": meta["uid"]},
                },
            }  # fmt: skip
            self.kube.call(core.create_persistent_volume, pv)
            log.info("provisioned %s for %s/%s at %s", name, meta["namespace"], meta["name"], d)
        for pv in self.kube.call(core.list_persistent_volume)["items"]:
            ann = pv["metadata"].get("annotations") or {}
            if (
                ann.get("pv.kubernetes.io/provisioned-by") == PROVISIONER
                and (pv.get("status") or {}).get("phase") in ("Released", "Failed")
                and pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete"
            ):
                path = Path(pv["spec"].get("hostPath", {}).get("path", ""))
                if path.parent == self.paths.volumes:
                    shutil.rmtree(path, ignore_errors=True)
                self.kube.call(core.delete_persistent_volume, pv["metadata"]["name"],
                               not_found_ok=True)  # fmt: skip

    # -- main -----------------------------------------------------------------------------
    def run(self) -> None:
        self.started_at = now_iso()
        self.register_node()
        threads = [
            threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True),
            threading.Thread(target=self.pod_loop, name="pods", daemon=True),
            threading.Thread(target=self.provisioner_loop, name="provisioner", daemon=True),
        ]
        server = None
        if self.port:
            server = self.logs_server()
            threads.append(threading.Thread(target=server.serve_forever, daemon=True))
        for t in threads:
            t.start()
        self.stop.wait()
        log.info("stopping: terminating containers")
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.shutdown()
        for w in workers:
            w.join(15)
        if server is not None:
            server.shutdown()
        if self.cgroups is not None:
            self.cgroups.cleanup()
        log.info("stopped")

    def logs_server(self) -> ThreadingHTTPServer:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

            def do_GET(self) -> None:
                u = urlparse(self.path)
                parts = u.path.strip("/").split("/")
                if parts == ["healthz"]:
                    self._reply(200, b"ok")
                    return
                if len(parts) != 4 or parts[0] != "containerLogs":
                    self._reply(404, b"not found")
                    return
                q = parse_qs(u.query)
                agent.serve_logs(self, parts[1], parts[2], parts[3], q)

            def _reply(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(
            str(self.paths.pki / "kubelet.crt"), str(self.paths.pki / "kubelet.key")
        )
        ctx.load_verify_locations(str(self.ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        return server

    def serve_logs(
        self, h: BaseHTTPRequestHandler, ns: str, pod: str, container: str,
        q: dict[str, list[str]],
    ) -> None:  # fmt: skip
        with self.lock:
            worker = next((w for w in self.workers.values() if w.ns == ns and w.name == pod), None)
        logdir = None
        if worker is not None:
            logdir = worker.logdir
        else:
            cands = sorted(self.paths.logs.joinpath("pods").glob(f"{ns}_{pod}_*"),
                           key=lambda p: p.stat().st_mtime)  # fmt: skip
            logdir = cands[-1] if cands else None
        files = sorted(
            (logdir / container).glob("*.log") if logdir else [],
            key=lambda p: int(p.stem) if p.stem.isdigit() else -1,
        )
        if q.get("previous", ["false"])[0] == "true":
            files = files[:-1]
        if not files:
            body = f"no logs for container {container} of pod {ns}/{pod}".encode()
            h.send_response(404)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        f = files[-1]
        data = f.read_bytes()
        tail = q.get("tailLines")
        if tail:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail[0]) :]) if int(tail[0]) > 0 else b""
        follow = q.get("follow", ["false"])[0] == "true"
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        if not follow:
            h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        if not follow:
            return
        pos = f.stat().st_size
        with contextlib.suppress(OSError), f.open("rb") as fh:
            fh.seek(pos)
            while not self.stop.is_set():
                chunk = fh.read(65536)
                if chunk:
                    h.wfile.write(chunk)
                    h.wfile.flush()
                    continue
                if worker is None or not worker.container_running(container):
                    break
                time.sleep(0.3)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------
# one pod
# ------------------------------------------------------------------------------------------
@dataclass
class ContainerRun:
    spec: JSON
    init: bool = False
    proc: subprocess.Popen[bytes] | None = None
    cgroup: MemoryCgroup | None = None
    started_at: str | None = None
    restart_count: int = 0
    state: JSON = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: JSON = field(default_factory=dict)
    rss_killed: bool = False
    next_start: float = 0.0
    container_id: str | None = None
    started_mono: float = 0.0
    ready: bool = True
    probes: dict[str, ProbeState] = field(default_factory=dict)
    kill_deadline: float | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self) -> JSON:
        return podspec.container_status(
            self.spec,
            self.state,
            self.restart_count,
            self.last_state,
            self.container_id,
            ready=self.ready,
        )


@dataclass
class ProbeState:
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0


def run_probe(probe: JSON, container: JSON, pid: int) -> tuple[bool, str]:
    """One probe attempt against a container (host network: 127.0.0.1)."""
    timeout = podspec.probe_timing(probe).timeout
    try:
        if "httpGet" in probe:
            hg = probe["httpGet"]
            port = podspec.probe_port(hg.get("port", 80), container)
            host = hg.get("host") or "127.0.0.1"
            headers = {h["name"]: h["value"] for h in hg.get("httpHeaders") or []}
            conn: http.client.HTTPConnection
            if str(hg.get("scheme", "HTTP")).upper() == "HTTPS":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                conn.request("GET", hg.get("path") or "/", headers=headers)
                code = conn.getresponse().status
            finally:
                conn.close()
            return 200 <= code < 400, f"HTTP probe failed with statuscode: {code}"
        if "tcpSocket" in probe:
            ts = probe["tcpSocket"]
            port = podspec.probe_port(ts.get("port", 0), container)
            with socket.create_connection((ts.get("host") or "127.0.0.1", port), timeout):
                return True, ""
        if "exec" in probe:
            # in the container's mount and cgroup namespaces (as root: an approximation)
            cmd = ["nsenter", "-t", str(pid), "-m", "-C", "--", *probe["exec"]["command"]]
            res = subprocess.run(cmd, capture_output=True, timeout=max(timeout, 1), check=False)
            out = (res.stdout + res.stderr).decode(errors="replace").strip()[-200:]
            return res.returncode == 0, f"exec probe failed ({res.returncode}): {out}"
    except (OSError, ValueError, subprocess.TimeoutExpired, http.client.HTTPException) as e:
        return False, f"probe failed: {e}"
    return True, ""  # grpc and unknown handlers: not emulated, treated as success


class PodWorker(threading.Thread):
    def __init__(self, agent: Agent, pod: JSON) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        self.pod = pod
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.dir = agent.paths.pods / self.uid
        self.logdir = agent.paths.logs / "pods" / f"{self.ns}_{self.name}_{self.uid}"
        spec = pod.get("spec") or {}
        self.restart_policy: str = spec.get("restartPolicy") or "Always"
        old = {s["name"]: s for s in (pod.get("status") or {}).get("containerStatuses") or []}
        self.init_runs = [ContainerRun(c, init=True) for c in spec.get("initContainers") or []]
        self.runs = [ContainerRun(c) for c in spec.get("containers") or []]
        for r in self.runs:  # a pod we ran before the agent restarted
            if r.name in old and old[r.name].get("state", {}).get("running"):
                r.restart_count = int(old[r.name].get("restartCount", 0)) + 1
                r.last_state = {"terminated": {
                    "exitCode": 137, "reason": "ContainerStatusUnknown",
                    "message": "The container could not be located when the node agent "
                               "restarted", "startedAt": old[r.name]["state"]["running"].get(
                                   "startedAt"), "finishedAt": now_iso()}}  # fmt: skip
                if self.restart_policy == "Never":
                    r.state = r.last_state
                    r.last_state = {}
                    r.restart_count -= 1
        self.wake = threading.Event()
        self.deleting_since: float | None = None
        self.gone = False  # the pod object is deleted
        self.start_time = (pod.get("status") or {}).get("startTime") or now_iso()
        self.last_status: JSON | None = None
        self.pod_reason: str | None = None
        self.pod_message: str | None = None
        self.mounts_cache: dict[str, Path] = {}
        self.initialized = not self.init_runs
        self.config_error: StartError | None = None

    # -- called by the agent ----------------------------------------------------------------
    def update(self, pod: JSON) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp") and self.deleting_since is None:
            self.deleting_since = time.monotonic()
        self.wake.set()

    def removed(self) -> None:
        self.gone = True
        if self.deleting_since is None:
            self.deleting_since = time.monotonic()
        self.wake.set()

    def shutdown(self) -> None:
        self.removed()

    def container_running(self, name: str) -> bool:
        return any(r.name == name and r.proc is not None and r.proc.poll() is None
                   for r in [*self.init_runs, *self.runs])  # fmt: skip

    # -- main -------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception as e:
            log.exception("pod worker %s/%s crashed", self.ns, self.name)
            self._kill_all(signal.SIGKILL)
            self.pod_reason, self.pod_message = "NodeAgentError", f"node agent error: {e}"
            with contextlib.suppress(Exception):
                self._report(final=True)
        finally:
            self._cleanup_processes()

    def _run(self) -> None:
        if self.pod["metadata"].get("deletionTimestamp"):
            self.deleting_since = time.monotonic()
        if all("terminated" in r.state for r in self.runs) and self.runs:
            self._report()  # agent restart with restartPolicy Never: report and stay
        self._report()
        prepared = False
        while True:
            if self.deleting_since is not None:
                self._terminate()
                return
            if not prepared:
                try:
                    self._prepare_volumes()
                    prepared = True
                    self.config_error = None
                except (StartError, ApiError, OSError) as e:
                    if not isinstance(e, StartError):
                        log.warning("%s/%s: preparing volumes: %s", self.ns, self.name, e)
                        e = StartError("ContainerCreating", f"preparing volumes: {e}")
                    self._set_waiting(e)
                    if e.reason == "ErrImagePull":
                        return
                    self.wake.wait(2)
                    self.wake.clear()
                    continue
            if self._step():
                self._report()
            if self._finished():
                self._report()
                self._cleanup_processes()
                # stay until the pod is deleted, then remove it
                while self.deleting_since is None:
                    self.wake.wait(5)
                    self.wake.clear()
                self._terminate()
                return
            self.wake.wait(0.2)
            self.wake.clear()

    def _set_waiting(self, e: StartError) -> None:
        changed = False
        for r in [*self.init_runs, *self.runs]:
            if "waiting" in r.state:
                new = {"waiting": {"reason": e.reason, "message": e.message}}
                changed = changed or new != r.state
                r.state = new
        if e.reason == "ErrImagePull":
            self.pod_reason, self.pod_message = e.reason, e.message
        if changed:
            self.agent.event(self.pod, "Failed", e.message, "Warning")
        self._report()

    def _finished(self) -> bool:
        if not self.initialized:
            return self.pod_reason is not None
        for r in self.runs:
            if "terminated" not in r.state:
                return False
            code = r.state["terminated"].get("exitCode", 1)
            if self.restart_policy == "Always" or (
                self.restart_policy == "OnFailure" and code != 0
            ):
                return False
        return True

    def _step(self) -> bool:
        """Advance container state machines; True if a status change should be reported."""
        changed = False
        if not self.initialized:
            for r in self.init_runs:
                if "terminated" in r.state and r.state["terminated"].get("exitCode") == 0:
                    continue
                changed |= self._drive(r, init=True)
                break
            else:
                self.initialized = True
                changed = True
            if not self.initialized:
                return changed
        for r in self.runs:
            changed |= self._drive(r)
        return changed

    def _drive(self, r: ContainerRun, init: bool = False) -> bool:
        if r.proc is not None:
            rc = r.proc.poll()
            if rc is None:
                self._check_rss(r)
                return self._check_probes(r)
            self._on_exit(r, rc)
            return True
        if "terminated" in r.state:
            code = r.state["terminated"].get("exitCode", 1)
            restart = (self.restart_policy == "Always" and not init) or (
                self.restart_policy in ("OnFailure", "Always") and code != 0
            )
            if init and code != 0 and self.restart_policy == "Never":
                self.pod_reason = "InitContainerFailed"
                return False
            if not restart:
                return False
            r.last_state = r.state
            r.restart_count += 1
            wait = r.next_start - time.monotonic()
            if wait > 0:
                r.state = {"waiting": {"reason": "CrashLoopBackOff" if code else "Completed",
                                       "message": f"back-off {wait:.0f}s restarting container "
                                       f"{r.name} of pod {self.ns}/{self.name}"}}  # fmt: skip
                return True
            return self._start(r)
        if "waiting" in r.state:
            if time.monotonic() < r.next_start:
                return False
            return self._start(r)
        return False

    # -- starting -------------------------------------------------------------------------
    def _start(self, r: ContainerRun) -> bool:
        try:
            return self._start_container(r)
        except (ApiError, OSError) as e:
            log.warning("%s/%s: starting %s: %s", self.ns, self.name, r.name, e)
            r.state = {"waiting": {"reason": "RunContainerError", "message": str(e)}}
            r.next_start = time.monotonic() + 2
            if r.cgroup is not None:
                r.cgroup.remove()
                r.cgroup = None
            return True

    def _start_container(self, r: ContainerRun) -> bool:
        pod, c = self.pod, r.spec
        image = str(c.get("image", ""))
        entry = self.agent.images.resolve(image)
        if entry is None:
            msg = (f'Failed to pull image "{image}": the devcluster node agent has no local '
                   f"entry point for image name {podspec.image_basename(image)!r}")  # fmt: skip
            r.state = {"waiting": {"reason": "ErrImagePull", "message": msg}}
            self.pod_reason, self.pod_message = "ErrImagePull", msg
            self.agent.event(pod, "Failed", msg, "Warning")
            if self.restart_policy != "Always":
                r.state = podspec.terminated_state(
                    podspec.EXIT_START_ERROR, "ErrImagePull", None, message=msg
                )
                r.state["terminated"]["startedAt"] = None
            r.next_start = time.monotonic() + 10
            return True
        base = {
            "PATH": f"{venv_bin()}:{podspec.DEFAULT_PATH}",
            "HOSTNAME": self.name,
            "HOME": "/root",
            **dict(entry.env),
        }
        sc = {**((pod.get("spec") or {}).get("securityContext") or {}),
              **(c.get("securityContext") or {})}  # fmt: skip
        uid = sc.get("runAsUser")
        if uid not in (None, 0):
            base["HOME"] = "/"
        # in-cluster config: the API server itself, not the Service IP (no kube-proxy here)
        base.update(podspec.kubernetes_service_env(self.agent.api_host, self.agent.api_port))
        try:
            env = podspec.resolve_env(
                pod, c, self.agent.lookup_configmap, self.agent.lookup_secret, base
            )
            argv = podspec.build_argv(c, entry, env, [venv_bin()])
            mounts = self._mounts_for(c)
        except StartError as e:
            r.state = {"waiting": {"reason": e.reason, "message": e.message}}
            r.next_start = time.monotonic() + 2
            self.agent.event(pod, "Failed", e.message, "Warning")
            return True
        limit = podspec.memory_limit_bytes(c)
        cg = None
        if self.agent.cgroups is not None:
            cg = self.agent.cgroups.create(f"{self.uid}-{r.name}-{r.restart_count}", limit)
            r.cgroup = cg
        groups = [int(g) for g in (pod["spec"].get("securityContext") or {}).get(
            "supplementalGroups") or []]  # fmt: skip
        fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
        if fs_group is not None:
            groups.append(int(fs_group))
        hide = []
        if uid not in (None, 0):
            hide = _hide_for_nonroot()
            mounts = [*mounts, *self._identity_files(int(uid), sc.get("runAsGroup"))]
        launch = {
            "argv": argv,
            "env": env,
            "cwd": c.get("workingDir") or "/",
            "mounts": mounts,
            "hide": hide,
            "reexpose": runtime_paths(),
            "readOnlyRoot": bool(sc.get("readOnlyRootFilesystem")),
            "uid": uid,
            "gid": sc.get("runAsGroup"),
            "groups": groups,
            "noNewPrivs": sc.get("allowPrivilegeEscalation") is False,
            "cgroupProcs": str(cg.procs_file) if cg else None,
            # the container sees its own cgroup at /sys/fs/cgroup/memory (cgroup namespace
            # plus a bind mount), as in a real container
            "cgroupDir": str(cg.path) if cg else None,
            "cgroupMount": str(cg.mount_target) if cg else None,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.dir / f"launch-{r.name}.json"
        spec_file.write_text(json.dumps(launch))
        spec_file.chmod(0o600)
        logdir = self.logdir / r.name
        logdir.mkdir(parents=True, exist_ok=True)
        logfile = logdir / f"{r.restart_count}.log"
        with logfile.open("ab") as out:
            r.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", LAUNCHER, str(spec_file)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env={},
            )
        r.cgroup = cg
        r.rss_killed = False
        r.started_at = now_iso()
        r.container_id = f"devcluster://{self.uid}/{r.name}/{r.restart_count}/{r.proc.pid}"
        r.state = {"running": {"startedAt": r.started_at}}
        r.started_mono = time.monotonic()
        r.probes = {k: ProbeState() for k in ("readinessProbe", "livenessProbe") if c.get(k)}
        r.ready = not c.get("readinessProbe")
        r.kill_deadline = None
        log.info("started %s/%s container %s pid %d: %s (memory limit %s)", self.ns, self.name,
                 r.name, r.proc.pid, shlex.join(argv)[:200], limit)  # fmt: skip
        self.agent.event(pod, "Started", f"Started container {r.name}")
        return True

    def _identity_files(self, uid: int, gid: Any) -> list[JSON]:
        """Images define their users in /etc/passwd (distroless ``nonroot`` is 65532); the
        host may not. For a uid the host does not know, bind a copy of /etc/passwd and
        /etc/group with an entry for it (getpass.getuser(), used by kopf, needs one)."""
        try:
            pwd.getpwuid(uid)
            return []
        except KeyError:
            pass
        g = int(gid) if gid is not None else uid
        out = []
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, line in (
            ("passwd", f"nonroot{uid}:x:{uid}:{g}:devcluster user:/:/sbin/nologin\n"),
            ("group", f"nonroot{g}:x:{g}:\n"),
        ):
            host = Path("/etc") / name
            text = host.read_text() if host.exists() else ""
            if name == "group" and any(
                ln.split(":")[2:3] == [str(g)] for ln in text.splitlines() if ln.count(":") >= 2
            ):
                continue
            f = self.dir / f"etc-{name}"
            f.write_text(text + ("" if text.endswith("\n") or not text else "\n") + line)
            f.chmod(0o644)
            out.append({"source": str(f), "target": str(host), "readOnly": True, "isFile": True})
        return out

    def _mounts_for(self, c: JSON) -> list[JSON]:
        out = []
        for vm in c.get("volumeMounts") or []:
            src = self.mounts_cache.get(vm["name"])
            if src is None:
                raise StartError("CreateContainerConfigError",
                                 f"volume {vm['name']!r} not found")  # fmt: skip
            if vm.get("subPath"):
                src = src / vm["subPath"]
                if not src.exists():
                    src.mkdir(parents=True, exist_ok=True)
            out.append({
                "source": str(src),
                "target": vm["mountPath"],
                "readOnly": bool(vm.get("readOnly")) or self._volume_ro(vm["name"]),
                "isFile": src.is_file(),
            })  # fmt: skip
        # deeper targets after their parents
        out.sort(key=lambda m: str(m["target"]).count("/"))
        return out

    def _volume_ro(self, name: str) -> bool:
        for v in (self.pod.get("spec") or {}).get("volumes") or []:
            if v["name"] == name:
                for key in ("persistentVolumeClaim", "hostPath"):
                    if key in v and v[key].get("readOnly"):
                        return True
                # configMap, secret, projected and downwardAPI volumes are read-only
                return any(k in v for k in ("configMap", "secret", "projected", "downwardAPI"))
        return False

    # -- volumes ----------------------------------------------------------------------------
    def _prepare_volumes(self) -> None:
        ns = self.ns
        vroot = self.dir / "volumes"
        fs_group = ((self.pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
        for v in (self.pod.get("spec") or {}).get("volumes") or []:
            name = v["name"]
            if name in self.mounts_cache:
                continue
            target = vroot / name
            if "emptyDir" in v:
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(0o777)
            elif "hostPath" in v:
                hp = v["hostPath"]
                target = Path(hp["path"])
                typ = hp.get("type") or ""
                if typ == "DirectoryOrCreate":
                    target.mkdir(parents=True, exist_ok=True)
                elif typ == "FileOrCreate":
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.touch(exist_ok=True)
                elif typ in ("Directory", "File") and not target.exists():
                    raise StartError("CreateContainerConfigError",
                                     f"hostPath {target} does not exist ({typ})")  # fmt: skip
            elif "configMap" in v:
                self._configmap_volume(target, v["configMap"], ns)
            elif "secret" in v:
                self._secret_volume(target, v["secret"], ns)
            elif "persistentVolumeClaim" in v:
                target = self._pvc_path(v["persistentVolumeClaim"]["claimName"], ns)
            elif "projected" in v:
                self._projected_volume(target, v["projected"], ns)
            elif "downwardAPI" in v:
                dm = int(v["downwardAPI"].get("defaultMode") or 0o644)
                self._downward_items(target, v["downwardAPI"].get("items") or [], dm)
            else:
                kinds = sorted(k for k in v if k != "name")
                raise StartError("CreateContainerConfigError",
                                 f"volume {name}: unsupported volume type {kinds}")  # fmt: skip
            if fs_group is not None and target.is_relative_to(vroot):
                _chgrp_tree(target, int(fs_group))
            self.mounts_cache[name] = target

    def _configmap_volume(self, target: Path, src: JSON, ns: str) -> None:
        kube = self.agent.kube
        cm = kube.call(kube.core.read_namespaced_config_map, src["name"], ns, not_found_ok=True)
        target.mkdir(parents=True, exist_ok=True)
        if cm is None:
            if src.get("optional"):
                return
            raise StartError("CreateContainerConfigError", f'configmap "{src["name"]}" not found')
        data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
        import base64

        data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
        _project_items(target, data, src.get("items"), int(src.get("defaultMode") or 0o644),
                       f"configmap {ns}/{src['name']}")  # fmt: skip

    def _secret_volume(self, target: Path, src: JSON, ns: str) -> None:
        name = src.get("secretName") or src.get("name")
        kube = self.agent.kube
        s = kube.call(kube.core.read_namespaced_secret, name, ns, not_found_ok=True)
        target.mkdir(parents=True, exist_ok=True)
        if s is None:
            if src.get("optional"):
                return
            raise StartError("CreateContainerConfigError", f'secret "{name}" not found')
        data = {k: v.encode() for k, v in podspec.decode_secret_data(s).items()}
        _project_items(target, data, src.get("items"), int(src.get("defaultMode") or 0o644),
                       f"secret {ns}/{name}")  # fmt: skip

    def _downward_items(self, target: Path, items: list[JSON], mode: int) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for it in items:
            if "fieldRef" in it:
                value = podspec.field_ref(self.pod, it["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in it:
                cname = it["resourceFieldRef"].get("containerName")
                cont = next(
                    (c for c in self.pod["spec"]["containers"] if c["name"] == cname),
                    self.pod["spec"]["containers"][0],
                )
                value = podspec.resource_field_ref(cont, it["resourceFieldRef"])
            else:
                continue
            _write_file(target / it["path"], value.encode(), int(it.get("mode") or mode))

    def _projected_volume(self, target: Path, proj: JSON, ns: str) -> None:
        mode = int(proj.get("defaultMode") or 0o644)
        target.mkdir(parents=True, exist_ok=True)
        for src in proj.get("sources") or []:
            if "serviceAccountToken" in src:
                t = src["serviceAccountToken"]
                token = self._token(t.get("audience"), int(t.get("expirationSeconds") or 3607))
                _write_file(target / t["path"], token.encode(), mode)
            elif "configMap" in src:
                self._configmap_volume(target, {**src["configMap"], "defaultMode": mode}, ns)
            elif "secret" in src:
                self._secret_volume(target, {**src["secret"], "defaultMode": mode}, ns)
            elif "downwardAPI" in src:
                self._downward_items(target, src["downwardAPI"].get("items") or [], mode)

    def _token(self, audience: str | None, expiration: int) -> str:
        sa = (self.pod.get("spec") or {}).get("serviceAccountName") or "default"
        spec: JSON = {
            "expirationSeconds": expiration,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name,
                               "uid": self.uid},
        }  # fmt: skip
        if audience:
            spec["audiences"] = [audience]
        try:
            kube = self.agent.kube
            tr = kube.call(
                kube.core.create_namespaced_service_account_token, sa, self.ns,
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                 "spec": spec},
            )  # fmt: skip
        except ApiError as e:
            raise StartError("CreateContainerConfigError",
                             f"service account token for {sa}: {e}") from e  # fmt: skip
        return str(tr["status"]["token"])

    def _pvc_path(self, claim: str, ns: str) -> Path:
        kube = self.agent.kube
        pvc = kube.call(kube.core.read_namespaced_persistent_volume_claim, claim, ns,
                        not_found_ok=True)
        if pvc is None:
            raise StartError("CreateContainerConfigError",
                             f'persistentvolumeclaim "{claim}" not found')  # fmt: skip
        vol = (pvc.get("spec") or {}).get("volumeName")
        if not vol or (pvc.get("status") or {}).get("phase") != "Bound":
            raise StartError("ContainerCreating", f"waiting for PVC {ns}/{claim} to be bound")
        pv = kube.call(kube.core.read_persistent_volume, vol, not_found_ok=True)
        if pv is None:
            raise StartError("ContainerCreating", f"PV {vol} not found")
        spec = pv.get("spec") or {}
        src = (spec.get("hostPath") or {}).get("path") or (spec.get("local") or {}).get("path")
        if not src:
            raise StartError("CreateContainerConfigError",
                             f"PV {vol} is neither hostPath nor local")  # fmt: skip
        p = Path(src)
        if not p.exists():
            p.mkdir(parents=True, exist_ok=True)
            p.chmod(0o777)
        return p

    # -- exits, termination -----------------------------------------------------------------
    def _on_exit(self, r: ContainerRun, rc: int) -> None:
        oom = r.rss_killed
        if r.cgroup is not None:
            oom = oom or r.cgroup.oom_kills() > 0
            r.cgroup.kill_all()
            r.cgroup.remove()
        else:
            _killpg(r.proc.pid if r.proc else 0, signal.SIGKILL)
        code, reason, sig = podspec.exit_info(rc, oom)
        message = None
        log_file = self.logdir / r.name / f"{r.restart_count}.log"
        if code == podspec.EXIT_START_ERROR and not oom:
            message = _last_line(log_file)
            if message and message.startswith("devcluster: container start failed"):
                reason = "StartError"
        elif code != 0 and r.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            # As the kubelet does: no termination-log file here, so the tail of the log.
            message = log_tail(log_file)
        r.state = podspec.terminated_state(code, reason, r.started_at, message=message,
                                           signal=sig, container_id=r.container_id)  # fmt: skip
        log.info("%s/%s container %s exited: %s code %d", self.ns, self.name, r.name, reason,
                 code)  # fmt: skip
        if reason == "OOMKilled":
            self.agent.event(self.pod, "OOMKilled",
                             f"Container {r.name} was OOM-killed (memory limit "
                             f"{podspec.memory_limit_bytes(r.spec)} bytes)", "Warning")  # fmt: skip
        r.proc = None
        r.cgroup = None
        delay = min(30.0, 2.0 ** min(r.restart_count, 5)) if code != 0 else 1.0
        r.next_start = time.monotonic() + delay

    def _check_probes(self, r: ContainerRun) -> bool:
        """Run due readiness/liveness probes; True if the container's readiness changed."""
        now = time.monotonic()
        if r.kill_deadline is not None:
            if now >= r.kill_deadline:
                self._signal(r, signal.SIGKILL)
            return False
        changed = False
        for kind, st in r.probes.items():
            probe = r.spec[kind]
            t = podspec.probe_timing(probe)
            if now < r.started_mono + t.initial_delay or now < st.next_at or r.proc is None:
                continue
            st.next_at = now + t.period
            ok, msg = run_probe(probe, r.spec, r.proc.pid)
            st.successes, st.failures = (st.successes + 1, 0) if ok else (0, st.failures + 1)
            what = "Readiness" if kind == "readinessProbe" else "Liveness"
            if not ok:
                self.agent.event(self.pod, "Unhealthy", f"{what} probe failed: {msg}", "Warning")
            if kind == "readinessProbe":
                if ok and not r.ready and st.successes >= t.success_threshold:
                    r.ready, changed = True, True
                elif not ok and r.ready and st.failures >= t.failure_threshold:
                    r.ready, changed = False, True
            elif not ok and st.failures >= t.failure_threshold:
                self.agent.event(
                    self.pod,
                    "Killing",
                    f"Container {r.name} failed liveness probe, will be restarted",
                )
                grace = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                r.kill_deadline = now + float(grace)
                self._signal(r, signal.SIGTERM)
        return changed

    def _signal(self, r: ContainerRun, sig: int) -> None:
        if r.proc is None or r.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(r.proc.pid, sig)
        if sig == signal.SIGKILL:
            if r.cgroup is not None:
                r.cgroup.kill_all()
            _killpg(r.proc.pid, sig)

    def _check_rss(self, r: ContainerRun) -> None:
        if r.cgroup is not None or r.proc is None:
            return
        limit = podspec.memory_limit_bytes(r.spec)
        if not limit:
            return
        if _group_rss(r.proc.pid) > limit:
            log.warning("%s/%s container %s over its memory limit: killing", self.ns, self.name,
                        r.name)  # fmt: skip
            r.rss_killed = True
            _killpg(r.proc.pid, signal.SIGKILL)

    def _kill_all(self, sig: int) -> None:
        for r in [*self.init_runs, *self.runs]:
            if r.proc is not None and r.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(r.proc.pid, sig)
                if sig == signal.SIGKILL:
                    if r.cgroup is not None:
                        r.cgroup.kill_all()
                    _killpg(r.proc.pid, sig)

    def _terminate(self) -> None:
        """SIGTERM, wait the grace period, SIGKILL; report; delete the pod object."""
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        if self.gone:
            grace = min(int(grace), 2)
        running = [r for r in [*self.init_runs, *self.runs]
                   if r.proc is not None and r.proc.poll() is None]  # fmt: skip
        if running:
            self.agent.event(
                self.pod, "Killing", f"Stopping container(s) {', '.join(r.name for r in running)}"
            )
            self._kill_all(signal.SIGTERM)
            deadline = (self.deleting_since or time.monotonic()) + float(grace)
            while time.monotonic() < deadline and any(
                r.proc is not None and r.proc.poll() is None for r in running
            ):
                time.sleep(0.1)
            self._kill_all(signal.SIGKILL)
            for r in running:
                if r.proc is not None:
                    r.proc.wait()
                    self._on_exit(r, r.proc.returncode if r.proc else -9)
        for r in [*self.init_runs, *self.runs]:
            if "terminated" not in r.state:
                r.state = podspec.terminated_state(137 if r.started_at else 0,
                                                   "ContainerStatusUnknown" if r.started_at
                                                   else "Completed", r.started_at)  # fmt: skip
        if not self.gone:
            self._report(final=True)
            self.agent.delete_pod(self.pod)
        self._cleanup_processes()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.agent.forget(self.uid)

    def _cleanup_processes(self) -> None:
        for r in [*self.init_runs, *self.runs]:
            if r.proc is not None and r.proc.poll() is None:
                self._kill_all(signal.SIGKILL)
                with contextlib.suppress(Exception):
                    r.proc.wait(5)
            if r.cgroup is not None:
                r.cgroup.kill_all()
                r.cgroup.remove()
                r.cgroup = None

    # -- status -----------------------------------------------------------------------------
    def _report(self, final: bool = False) -> None:
        statuses = [r.status() for r in self.runs]
        init_statuses = [r.status() for r in self.init_runs]
        if (
            self.pod_reason in ("ErrImagePull",) and self.restart_policy != "Always"
        ) or self.pod_reason == "InitContainerFailed":
            phase = "Failed"
        elif not self.initialized:
            phase = "Pending"
        else:
            phase = podspec.pod_phase(self.restart_policy, statuses, len(self.runs))
        if final and phase not in TERMINAL:
            failed = any(s["state"].get("terminated", {}).get("exitCode", 0) != 0
                         for s in statuses)  # fmt: skip
            phase = "Failed" if failed else "Succeeded"
        old = self.pod.get("status") or {}
        status: JSON = {
            "phase": phase,
            "conditions": podspec.merge_conditions(
                old.get("conditions"),
                podspec.pod_conditions(phase, statuses, self.initialized),
            ),
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
            "qosClass": old.get("qosClass"),
            "reason": self.pod_reason if phase == "Failed" else None,
            "message": self.pod_message if phase == "Failed" else None,
        }
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        comparable = json.dumps({**status, "conditions": [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status["conditions"]]}, sort_keys=True)  # fmt: skip
        if comparable == self.last_status_key and not final:
            return
        try:
            kube = self.agent.kube
            updated = kube.call(kube.core.patch_namespaced_pod_status, self.name, self.ns,
                                {"status": status}, _content_type=MERGE_PATCH)
            self.last_status_key = comparable
            if updated and updated["metadata"]["uid"] == self.uid:
                self.pod = {**self.pod, "status": updated.get("status")}
        except ApiError as e:
            if e.status == 404:
                self.gone = True
            else:
                log.warning("status of %s/%s: %s", self.ns, self.name, e)

    last_status_key: str | None = None


def runtime_paths() -> list[str]:
    """What a container's entry points run from: the Python install, the venv and the project
    (an editable install). A volume mounted over one of their parents (an emptyDir at /tmp
    over a checkout in /tmp) must not hide them: the launcher binds them back on top."""
    project = Path(__file__).resolve().parent.parent
    return sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), str(project)})


def _hide_for_nonroot() -> list[JSON]:
    """Directories a non-root user cannot traverse on the way to the Python install
    (typically /root for a pyenv or venv under /root): hidden behind a tmpfs in the
    container's mount namespace, with the needed paths bound back in."""
    needed = set(runtime_paths())
    hide: dict[str, set[str]] = {}
    for n in needed:
        p = Path(n)
        for anc in reversed(p.parents):
            if str(anc) == "/":
                continue
            try:
                mode = anc.stat().st_mode
            except OSError:
                break
            if not mode & 0o001:
                rel = p.relative_to(anc).parts
                hide.setdefault(str(anc), set()).add(str(anc / rel[0]) if rel else str(anc))
                break
    return [{"dir": d, "keep": sorted(k)} for d, k in hide.items()]


def _chgrp_tree(root: Path, gid: int) -> None:
    for p in [root, *root.rglob("*")]:
        with contextlib.suppress(OSError):
            os.chown(p, -1, gid, follow_symlinks=False)
            if p.is_dir():
                p.chmod(p.stat().st_mode | 0o2070)


def _killpg(pid: int, sig: int) -> None:
    if pid <= 0:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _group_rss(pgid: int) -> int:
    """Sum of RSS of the processes in process group ``pgid`` (the container's session)."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 (pgrp) of /proc/pid/stat
                total += int(fields[21]) * page  # field 24 (rss, pages)
        except (OSError, ValueError, IndexError):
            continue
    return total


def log_tail(path: Path, max_lines: int = 80, max_bytes: int = 2048) -> str | None:
    """The kubelet's FallbackToLogsOnError message: the log's last 80 lines or 2 KiB."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            data = fh.read()
    except OSError:
        return None
    lines = data.decode(errors="replace").splitlines()[-max_lines:]
    return "\n".join(lines).strip() or None


def _last_line(path: Path) -> str | None:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[-1] if lines else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="devcluster agent", description=__doc__)
    ap.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    ap.add_argument("--node-name", default=NODE_NAME)
    ap.add_argument("--port", type=int, default=0, help="HTTPS port for kubectl logs (0 = off)")
    ap.add_argument("--image-map", type=Path,
                    default=os.environ.get("EIO_DEVCLUSTER_IMAGE_MAP") or None,
                    help="JSON file with extra image -> entry point mappings")  # fmt: skip
    ap.add_argument("--cpu", default=os.environ.get("EIO_DEVCLUSTER_NODE_CPU"),
                    help="CPU capacity to report (default: max(cores, 8))")  # fmt: skip
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(threadName)s: %(message)s",
    )
    agent = Agent(
        Kube(args.kubeconfig),
        node_name=args.node_name,
        port=args.port,
        image_map=podspec.ImageMap.from_file(args.image_map, venv_bin()),
        cpu=args.cpu,
    )

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d", signum)
        agent.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()


if __name__ == "__main__":
    main()
