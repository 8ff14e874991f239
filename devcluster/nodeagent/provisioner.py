"""The ``standard`` StorageClass's provisioner: a PV ``pvc-<uid>`` with a hostPath directory
under ``$EIO_CACHE/volumes`` for each pending PVC that names this provisioner (bound by the
controller-manager), and reclaim policy Delete for the released ones."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from devcluster.config import PROVISIONER
from devcluster.kube import Kube
from devcluster.podspec import JSON

log = logging.getLogger("nodeagent")

POLL_SECONDS = 2


def _ours(pvc: JSON) -> bool:
    ann = pvc["metadata"].get("annotations") or {}
    return PROVISIONER in (
        ann.get("volume.kubernetes.io/storage-provisioner"),
        ann.get("volume.beta.kubernetes.io/storage-provisioner"),
    )


class Provisioner:
    def __init__(self, kube: Kube, volumes: Path) -> None:
        self.kube = kube
        self.volumes = volumes

    def loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.provision_once()
            except Exception as e:
                log.warning("provisioner: %s", e)
            stop.wait(POLL_SECONDS)

    def provision_once(self) -> None:
        core = self.kube.core
        for pvc in self.kube.call(core.list_persistent_volume_claim_for_all_namespaces)["items"]:
            pending = (pvc.get("status") or {}).get("phase") in (None, "Pending")
            if _ours(pvc) and pending and not (pvc.get("spec") or {}).get("volumeName"):
                self._provision(pvc)
        for pv in self.kube.call(core.list_persistent_volume)["items"]:
            ann = pv["metadata"].get("annotations") or {}
            if (
                ann.get("pv.kubernetes.io/provisioned-by") == PROVISIONER
                and (pv.get("status") or {}).get("phase") in ("Released", "Failed")
                and pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete"
            ):
                self._reclaim(pv)

    def _provision(self, pvc: JSON) -> None:
        core = self.kube.core
        meta, spec = pvc["metadata"], pvc.get("spec") or {}
        name = f"pvc-{meta['uid']}"
        if self.kube.call(core.read_persistent_volume, name, not_found_ok=True) is not None:
            return
        d = self.volumes / name
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

    def _reclaim(self, pv: JSON) -> None:
        path = Path(pv["spec"].get("hostPath", {}).get("path", ""))
        if path.parent == self.volumes:
            shutil.rmtree(path, ignore_errors=True)
        self.kube.call(self.kube.core.delete_persistent_volume, pv["metadata"]["name"],
                       not_found_ok=True)  # fmt: skip
