"""The pods bound to this node: lists and watches them (``spec.nodeName``), starts a
:class:`PodWorker` for each new one, hands it every update and its deletion, and removes a
finished pod that is being deleted without a worker (after an agent restart)."""

from __future__ import annotations

import logging
import threading

from kubernetes.client.exceptions import ApiException

from devcluster.nodeagent.api import NodeApi
from devcluster.nodeagent.worker import TERMINAL, NodeServices, PodWorker
from devcluster.podspec import JSON

log = logging.getLogger("nodeagent")

WATCH_SECONDS = 50


class PodSync:
    def __init__(self, services: NodeServices, node: str) -> None:
        self.services = services
        self.api: NodeApi = services.api
        self.node = node
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()

    def loop(self, stop: threading.Event) -> None:
        selector = f"spec.nodeName={self.node}"
        kube = self.api.kube
        while not stop.is_set():
            try:
                lst = kube.call(kube.core.list_pod_for_all_namespaces, field_selector=selector)
                self._relisted(lst.get("items") or [])
                for ev in kube.watch_pods(selector, lst["metadata"]["resourceVersion"],
                                          WATCH_SECONDS):  # fmt: skip
                    if stop.is_set():
                        break
                    typ, obj = ev.get("type"), ev.get("object") or {}
                    if typ in ("ADDED", "MODIFIED"):
                        self.on_pod(obj)
                    elif typ == "DELETED":
                        self.on_deleted(obj["metadata"]["uid"])
            except ApiException as e:  # Watch raises an ERROR event, e.g. 410 Gone
                if e.status != 410:  # 410: resourceVersion too old, relist at once
                    log.warning("pod watch failed: %s; relisting", e)
                    stop.wait(1)
            except Exception as e:
                log.warning("pod watch failed: %s; relisting", e)
                stop.wait(1)

    def _relisted(self, pods: list[JSON]) -> None:
        seen = set()
        for pod in pods:
            seen.add(pod["metadata"]["uid"])
            self.on_pod(pod)
        with self.lock:
            gone = [uid for uid in self.workers if uid not in seen]
        for uid in gone:
            self.on_deleted(uid)

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
                    threading.Thread(target=self.api.delete_pod, args=(pod,), daemon=True).start()
                return
            w = PodWorker(self.services, pod, self.forget)
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

    def find(self, ns: str, name: str) -> PodWorker | None:
        """The live pod ``ns/name`` (for its logs)."""
        with self.lock:
            return next((w for w in self.workers.values() if w.ns == ns and w.name == name), None)

    def shutdown(self, timeout: float = 15) -> None:
        """Terminate every pod's containers (the pod objects stay)."""
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.shutdown()
        for w in workers:
            w.join(timeout)
