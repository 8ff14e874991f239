"""A pod's volumes as host directories, and its containers' mounts of them: emptyDir under
the pod's directory, ConfigMap/Secret/projected/downwardAPI files written there at start
(read-only mounts), hostPath as is, a PVC as its bound PV's directory."""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path

from devcluster import podspec
from devcluster.nodeagent.api import NodeApi
from devcluster.podspec import JSON, StartError

READ_ONLY_KINDS = ("configMap", "secret", "projected", "downwardAPI")


def write_file(path: Path, data: bytes, mode: int) -> None:
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
            write_file(target / it["path"], data[it["key"]], int(it.get("mode") or mode))
    else:
        for k, v in data.items():
            write_file(target / k, v, mode)


def _chgrp_tree(root: Path, gid: int) -> None:
    for p in [root, *root.rglob("*")]:
        with contextlib.suppress(OSError):
            os.chown(p, -1, gid, follow_symlinks=False)
            if p.is_dir():
                p.chmod(p.stat().st_mode | 0o2070)


def _host_path(hp: JSON) -> Path:
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
    return target


class PodVolumes:
    """The volumes of one pod, prepared once each (``prepare`` is retried until all are)."""

    def __init__(self, api: NodeApi, pod_dir: Path) -> None:
        self.api = api
        self.root = pod_dir / "volumes"
        self.paths: dict[str, Path] = {}
        self.specs: dict[str, JSON] = {}

    def prepare(self, pod: JSON) -> None:
        """Each volume of ``pod`` not prepared yet. ``StartError`` (or ``ApiError``,
        ``OSError``) for the first that cannot be: the container waits."""
        ns = pod["metadata"]["namespace"]
        fs_group = ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
        for v in (pod.get("spec") or {}).get("volumes") or []:
            name = v["name"]
            self.specs[name] = v
            if name in self.paths:
                continue
            target = self._prepare_one(pod, ns, v)
            if fs_group is not None and target.is_relative_to(self.root):
                _chgrp_tree(target, int(fs_group))
            self.paths[name] = target

    def _prepare_one(self, pod: JSON, ns: str, v: JSON) -> Path:
        target: Path = self.root / v["name"]
        if "emptyDir" in v:
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o777)
        elif "hostPath" in v:
            target = _host_path(v["hostPath"])
        elif "configMap" in v:
            self._configmap(target, v["configMap"], ns)
        elif "secret" in v:
            self._secret(target, v["secret"], ns)
        elif "persistentVolumeClaim" in v:
            target = self.api.pvc_host_path(ns, v["persistentVolumeClaim"]["claimName"])
        elif "projected" in v:
            self._projected(pod, target, v["projected"], ns)
        elif "downwardAPI" in v:
            dm = int(v["downwardAPI"].get("defaultMode") or 0o644)
            self._downward_items(pod, target, v["downwardAPI"].get("items") or [], dm)
        else:
            kinds = sorted(k for k in v if k != "name")
            raise StartError("CreateContainerConfigError",
                             f"volume {v['name']}: unsupported volume type {kinds}")  # fmt: skip
        return target

    def mounts_for(self, c: JSON) -> list[JSON]:
        """Container ``c``'s volumeMounts as the launcher's bind mounts, parents first."""
        out = []
        for vm in c.get("volumeMounts") or []:
            src = self.paths.get(vm["name"])
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
                "readOnly": bool(vm.get("readOnly")) or self._read_only(vm["name"]),
                "isFile": src.is_file(),
            })  # fmt: skip
        # deeper targets after their parents
        out.sort(key=lambda m: str(m["target"]).count("/"))
        return out

    def _read_only(self, name: str) -> bool:
        v = self.specs.get(name)
        if v is None:
            return False
        for key in ("persistentVolumeClaim", "hostPath"):
            if key in v and v[key].get("readOnly"):
                return True
        # configMap, secret, projected and downwardAPI volumes are read-only
        return any(k in v for k in READ_ONLY_KINDS)

    def _configmap(self, target: Path, src: JSON, ns: str) -> None:
        cm = self.api.configmap(ns, src["name"])
        target.mkdir(parents=True, exist_ok=True)
        if cm is None:
            if src.get("optional"):
                return
            raise StartError("CreateContainerConfigError", f'configmap "{src["name"]}" not found')
        data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
        _project_items(target, data, src.get("items"), int(src.get("defaultMode") or 0o644),
                       f"configmap {ns}/{src['name']}")  # fmt: skip

    def _secret(self, target: Path, src: JSON, ns: str) -> None:
        name = src.get("secretName") or src.get("name")
        secret = self.api.secret_data(ns, str(name))
        target.mkdir(parents=True, exist_ok=True)
        if secret is None:
            if src.get("optional"):
                return
            raise StartError("CreateContainerConfigError", f'secret "{name}" not found')
        data = {k: v.encode() for k, v in secret.items()}
        _project_items(target, data, src.get("items"), int(src.get("defaultMode") or 0o644),
                       f"secret {ns}/{name}")  # fmt: skip

    def _downward_items(self, pod: JSON, target: Path, items: list[JSON], mode: int) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for it in items:
            if "fieldRef" in it:
                value = podspec.field_ref(pod, it["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in it:
                cname = it["resourceFieldRef"].get("containerName")
                cont = next(
                    (c for c in pod["spec"]["containers"] if c["name"] == cname),
                    pod["spec"]["containers"][0],
                )
                value = podspec.resource_field_ref(cont, it["resourceFieldRef"])
            else:
                continue
            write_file(target / it["path"], value.encode(), int(it.get("mode") or mode))

    def _projected(self, pod: JSON, target: Path, proj: JSON, ns: str) -> None:
        mode = int(proj.get("defaultMode") or 0o644)
        target.mkdir(parents=True, exist_ok=True)
        for src in proj.get("sources") or []:
            if "serviceAccountToken" in src:
                t = src["serviceAccountToken"]
                expiration = int(t.get("expirationSeconds") or 3607)
                token = self.api.service_account_token(pod, t.get("audience"), expiration)
                write_file(target / t["path"], token.encode(), mode)
            elif "configMap" in src:
                self._configmap(target, {**src["configMap"], "defaultMode": mode}, ns)
            elif "secret" in src:
                self._secret(target, {**src["secret"], "defaultMode": mode}, ns)
            elif "downwardAPI" in src:
                self._downward_items(pod, target, src["downwardAPI"].get("items") or [], mode)
