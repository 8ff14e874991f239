"""What the node agent asks of the API server on a pod's behalf: the objects a container's
config reads (ConfigMaps, Secrets, PVCs and their PVs, service-account tokens), events, the
pod's status and its final deletion. One place, so the pod worker, the volumes and the
container launch share it without reaching into each other."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from devcluster import podspec
from devcluster.kube import MERGE_PATCH, ApiError, Kube
from devcluster.podspec import JSON, StartError, now_iso

log = logging.getLogger("nodeagent")


class NodeApi:
    def __init__(self, kube: Kube, node: str) -> None:
        self.kube = kube
        self.node = node

    # -- what a container's config reads --------------------------------------------------
    def configmap(self, ns: str, name: str) -> JSON | None:
        cm: JSON | None = self.kube.call(
            self.kube.core.read_namespaced_config_map, name, ns, not_found_ok=True
        )
        return cm

    def configmap_data(self, ns: str, name: str) -> dict[str, str] | None:
        cm = self.configmap(ns, name)
        return None if cm is None else dict(cm.get("data") or {})

    def secret_data(self, ns: str, name: str) -> dict[str, str] | None:
        s = self.kube.call(self.kube.core.read_namespaced_secret, name, ns, not_found_ok=True)
        return None if s is None else podspec.decode_secret_data(s)

    def service_account_token(self, pod: JSON, audience: str | None, expiration: int) -> str:
        """A token bound to ``pod`` from the TokenRequest API, as the kubelet gets one."""
        meta = pod["metadata"]
        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        spec: JSON = {
            "expirationSeconds": expiration,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"],
                               "uid": meta["uid"]},
        }  # fmt: skip
        if audience:
            spec["audiences"] = [audience]
        try:
            tr = self.kube.call(
                self.kube.core.create_namespaced_service_account_token, sa, meta["namespace"],
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                 "spec": spec},
            )  # fmt: skip
        except ApiError as e:
            raise StartError("CreateContainerConfigError",
                             f"service account token for {sa}: {e}") from e  # fmt: skip
        return str(tr["status"]["token"])

    def pvc_host_path(self, ns: str, claim: str) -> Path:
        """The directory behind a bound PVC (its PV's hostPath or local path)."""
        core = self.kube.core
        pvc = self.kube.call(core.read_namespaced_persistent_volume_claim, claim, ns,
                             not_found_ok=True)  # fmt: skip
        if pvc is None:
            raise StartError("CreateContainerConfigError",
                             f'persistentvolumeclaim "{claim}" not found')  # fmt: skip
        vol = (pvc.get("spec") or {}).get("volumeName")
        if not vol or (pvc.get("status") or {}).get("phase") != "Bound":
            raise StartError("ContainerCreating", f"waiting for PVC {ns}/{claim} to be bound")
        pv = self.kube.call(core.read_persistent_volume, vol, not_found_ok=True)
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

    # -- what the node reports about a pod ------------------------------------------------
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

    def patch_pod_status(self, ns: str, name: str, status: JSON) -> JSON | None:
        """Merge-patch the status subresource; the updated pod (ApiError as raised)."""
        updated: JSON | None = self.kube.call(
            self.kube.core.patch_namespaced_pod_status, name, ns, {"status": status},
            _content_type=MERGE_PATCH,
        )  # fmt: skip
        return updated

    def delete_pod(self, pod: JSON) -> None:
        """Remove the pod object at once (gracePeriodSeconds=0, uid precondition), as the
        kubelet does once the containers are gone."""
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
