"""Helpers for the operator's unit tests: example specs, observed pods and checkpoints."""

from __future__ import annotations

import copy
import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from eio_operator.kube import ApiError
from eio_operator.models import EmbeddingImportSpec
from eio_operator.observe import ObservedPod, Termination

from devcluster.testing import with_paths
from eio_common.contract import Checkpoint, Counters, Heartbeat, Lag

NOW = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
NAME = "imp"
NAMESPACE = "team-a"
UID = "11111111-2222-3333-4444-555555555555"

BASE_SPEC: dict[str, Any] = {
    "sources": {
        "hostPath": {"path": "/srv/conversations"},
        "paths": ["**/*.jsonl"],
        "format": "claude",
    },
    "embedding": {"model": "paraphrase-MiniLM-L3-v2", "batchSize": 32},
    "qdrant": {
        "embedded": {"hostPath": {"path": "/var/lib/eio/qdrant"}},
        "collection": "conversations",
    },
    "importer": {"image": "embedding-importer:0.1.0", "resources": {"limits": {"memory": "1Gi"}}},
    "memoryPolicy": {
        "threshold": "85%",
        "growFactor": 1.5,
        "maxMemoryLimit": "2Gi",
        "oomsBeforeGrow": 2,
        "retryBudget": 2,
        "backoffSeconds": 10,
        "maxBackoffSeconds": 300,
        "stallSeconds": 300,
        "overThresholdGraceSeconds": 60,
        "keepTerminatedPods": 2,
    },
}


def spec_dict(**patch: Any) -> dict[str, Any]:
    """BASE_SPEC with dotted-path overrides, e.g. spec_dict(**{"importer.image": "x"})."""
    return with_paths(BASE_SPEC, patch)


def make_spec(**patch: Any) -> EmbeddingImportSpec:
    return EmbeddingImportSpec.model_validate(spec_dict(**patch))


def pod(
    attempt: int,
    *,
    shard: int = 0,
    phase: str = "Running",
    exit_code: int | None = None,
    reason: str = "",
    evicted: bool = False,
    deleting: bool = False,
    started_ago: float = 30,
    waiting: str = "",
) -> ObservedPod:
    terminated = None
    if exit_code is not None or phase in ("Succeeded", "Failed"):
        terminated = Termination(exit_code=exit_code, reason=reason or "Error")
        if phase == "Running":
            phase = "Succeeded" if exit_code == 0 else "Failed"
    return ObservedPod(
        name=f"{NAME}-s{shard}-a{attempt}",
        uid=f"uid-{shard}-{attempt}",
        shard=shard,
        attempt=attempt,
        phase=phase,
        created=NOW - timedelta(seconds=started_ago + 5),
        started=None if phase == "Pending" else NOW - timedelta(seconds=started_ago),
        deleting=deleting,
        terminated=terminated,
        evicted=evicted,
        waiting_reason=waiting,
    )


def checkpoint(
    files_done: int = 5,
    *,
    total: int = 10,
    complete: bool = False,
    attempt: int = 3,
    hb_pod: str | None = None,
    hb_ago: float = 5,
    memory_mi: int = 100,
    shard: int = 0,
    points: int = 0,
    follow: bool = False,
    synced: bool = False,
    lag_files: int = 0,
    lag_bytes: int = 0,
    oldest_ago: float | None = None,
    synced_ago: float | None = None,
) -> Checkpoint:
    return Checkpoint(
        shard=shard,
        shards=1,
        filesTotal=total,
        filesDone=files_done,
        counters=Counters(files=files_done, points=points),
        attempt=attempt,
        complete=complete,
        follow=follow,
        synced=synced,
        lag=Lag(
            files=lag_files,
            bytes=lag_bytes,
            oldest=None if oldest_ago is None else NOW - timedelta(seconds=oldest_ago),
        ),
        lastSync=None if synced_ago is None else NOW - timedelta(seconds=synced_ago),
        heartbeat=Heartbeat(
            time=NOW - timedelta(seconds=hb_ago), memoryBytes=memory_mi * 2**20, pod=hb_pod
        ),
    )


def following(files_done: int = 5, **kw: Any) -> Checkpoint:
    """A checkpoint of an importer in follow mode that has caught up (mode Continuous)."""
    kw.setdefault("synced_ago", 3)
    return checkpoint(files_done, follow=True, synced=True, **kw)


# --------------------------------------------------------------------------------------------
# A small structural validator for the CRD's openAPIV3Schema (the subset the CRD uses), so the
# tests need no jsonschema package. CEL rules are checked by the API server (tests/e2e) and
# mirrored by the pydantic validators.
# --------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "eio.dev_embeddingimports.yaml"


def load_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def crd_schema() -> dict[str, Any]:
    schema: dict[str, Any] = load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def validate(instance: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Errors of ``instance`` against ``schema`` (unknown fields count as errors)."""
    errors: list[str] = []
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(instance, bool) or not isinstance(instance, int | str):
            return [f"{path}: expected int or string, got {instance!r}"]
    elif "type" in schema:
        ok = isinstance(instance, _TYPES[schema["type"]])
        if schema["type"] in ("integer", "number") and isinstance(instance, bool):
            ok = False
        if not ok:
            return [f"{path}: expected {schema['type']}, got {instance!r}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} not in {schema['enum']}")
    if isinstance(instance, str):
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errors.append(f"{path}: {instance!r} does not match {schema['pattern']}")
        if len(instance) < schema.get("minLength", 0):
            errors.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']}")
    if isinstance(instance, int | float) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{path}: {instance} < minimum {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{path}: {instance} > maximum {schema['maximum']}")
    if isinstance(instance, dict) and "properties" in schema:
        for key in schema.get("required", []):
            if key not in instance:
                errors.append(f"{path}.{key}: required")
        for key, value in instance.items():
            sub = schema["properties"].get(key)
            if sub is None:
                errors.append(f"{path}.{key}: unknown field")
            else:
                errors.extend(validate(value, sub, f"{path}.{key}"))
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        for i, item in enumerate(instance):
            errors.extend(validate(item, schema.get("items", {}), f"{path}[{i}]"))
    return errors


def apply_defaults(instance: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting as the API server does it (defaults of absent fields, recursively)."""
    if isinstance(instance, dict) and "properties" in schema:
        out = dict(instance)
        for key, sub in schema["properties"].items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(out[key], sub)
        return out
    if isinstance(instance, list) and "items" in schema:
        return [apply_defaults(i, schema["items"]) for i in instance]
    return instance


# --------------------------------------------------------------------------------------------
# An in-memory fake of eio_operator.kube.Kube (the only fake in these tests) and an event sink.
# --------------------------------------------------------------------------------------------


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """What the API server does with a JSON merge patch (RFC 7386): objects merge key by key,
    null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = apply_merge_patch(out.get(k), v)
    return out


class FakeKube:
    """Objects by (kind, namespace, name); resourceVersions, 409 on create of an existing name
    and on a status patch with a stale resourceVersion, 404 on delete of a missing pod."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, ...]] = []
        self._rv = itertools.count(1)
        self._uid = itertools.count(1)
        self.graceful_delete = False  # True: delete sets deletionTimestamp, the pod stays
        self.fail_next_create: ApiError | None = None

    # --- helpers for tests --------------------------------------------------------------
    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uid)}")
        meta.setdefault("creationTimestamp", NOW.isoformat().replace("+00:00", "Z"))
        meta["resourceVersion"] = str(next(self._rv))
        self.objects[(obj["kind"], meta["namespace"], meta["name"])] = obj
        return obj

    def get(self, kind: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def names(self, kind: str) -> list[str]:
        return sorted(n for (k, _, n) in self.objects if k == kind)

    def bump(self, kind: str, name: str, namespace: str = NAMESPACE) -> None:
        obj = self.objects[(kind, namespace, name)]
        obj["metadata"]["resourceVersion"] = str(next(self._rv))

    # --- Kube ---------------------------------------------------------------------------
    def get_import(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_import", name))
        obj = self.objects.get(("EmbeddingImport", namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def patch_import_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> None:
        self.calls.append(("patch_status", name))
        obj = self.objects.get(("EmbeddingImport", namespace, name))
        if obj is None:
            return
        if resource_version and obj["metadata"]["resourceVersion"] != resource_version:
            raise ApiError(409, "the object has been modified")
        obj["status"] = apply_merge_patch(obj.get("status"), json.loads(json.dumps(status)))
        self.bump("EmbeddingImport", name, namespace)

    def _list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        key, _, value = selector.partition("=")
        return [
            copy.deepcopy(o)
            for (k, ns, _), o in sorted(self.objects.items())
            if k == kind
            and ns == namespace
            and (o["metadata"].get("labels") or {}).get(key) == value
        ]

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.calls.append(("list_pods", selector))
        return self._list("Pod", namespace, selector)

    def list_imports(self, namespace: str | None) -> list[dict[str, Any]]:
        self.calls.append(("list_imports", namespace or ""))
        return [
            copy.deepcopy(o)
            for (k, ns, _), o in sorted(self.objects.items())
            if k == "EmbeddingImport" and namespace in (None, ns)
        ]

    def list_configmaps(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.calls.append(("list_configmaps", selector))
        return self._list("ConfigMap", namespace, selector)

    def list_services(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.calls.append(("list_services", selector))
        return self._list("Service", namespace, selector)

    def create(self, manifest: dict[str, Any]) -> bool:
        meta = manifest["metadata"]
        self.calls.append(("create", manifest["kind"], meta["name"]))
        if self.fail_next_create is not None and manifest["kind"] == "Pod":
            exc, self.fail_next_create = self.fail_next_create, None
            raise exc
        if (manifest["kind"], meta["namespace"], meta["name"]) in self.objects:
            return False
        obj = self.put(manifest)
        if manifest["kind"] == "Pod":
            obj["status"] = {"phase": "Pending"}
        if manifest["kind"] == "Service":  # as the API server allocates it
            obj["spec"]["clusterIP"] = f"10.96.0.{len(self.names('Service'))}"
        return True

    def patch_budget(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        self.calls.append(("patch_budget", name))
        self.objects[("PodDisruptionBudget", namespace, name)]["spec"].update(spec)

    def force_delete_pod(self, namespace: str, name: str, uid: str) -> bool:
        self.calls.append(("force_delete_pod", name))
        obj = self.objects.get(("Pod", namespace, name))
        if obj is None or obj["metadata"].get("uid") != uid:
            return False
        del self.objects[("Pod", namespace, name)]
        return True

    def get_node(self, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_node", name))
        obj = self.objects.get(("Node", "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def annotate_configmap(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        self.calls.append(("annotate_configmap", name))
        obj = self.objects.get(("ConfigMap", namespace, name))
        if obj is None:
            raise ApiError(404, f"configmaps {name!r} not found")
        obj["metadata"].setdefault("annotations", {}).update(annotations)
        self.bump("ConfigMap", name, namespace)

    def delete_pod(self, namespace: str, name: str) -> bool:
        self.calls.append(("delete_pod", name))
        key = ("Pod", namespace, name)
        if key not in self.objects:
            return False
        if self.graceful_delete:
            self.objects[key]["metadata"]["deletionTimestamp"] = "2026-11-21T10:00:00Z"
        else:
            del self.objects[key]
        return True


class Events:
    """Records what the operator would post as Kubernetes Events."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []

    def __call__(self, body: dict[str, Any], type: str, reason: str, message: str) -> None:
        assert body["kind"] == "EmbeddingImport"
        self.posted.append((type, reason, message))

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.posted]


def import_body(name: str = NAME, **patch: Any) -> dict[str, Any]:
    return {
        "apiVersion": "eio.dev/v1alpha1",
        "kind": "EmbeddingImport",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": UID, "generation": 1},
        "spec": spec_dict(**patch),
    }


def set_pod_state(
    kube: FakeKube,
    name: str,
    *,
    phase: str = "Running",
    exit_code: int | None = None,
    reason: str = "",
) -> None:
    """Play the kubelet: move a pod to Running or Terminated."""
    pod = kube.objects[("Pod", NAMESPACE, name)]
    state: dict[str, Any]
    if exit_code is None:
        state = {"running": {"startedAt": "2026-11-21T09:59:50Z"}}
    else:
        phase = "Succeeded" if exit_code == 0 else "Failed"
        state = {
            "terminated": {
                "exitCode": exit_code,
                "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                "finishedAt": "2026-11-21T10:00:00Z",
            }
        }
    pod["status"] = {"phase": phase, "containerStatuses": [{"name": "importer", "state": state}]}
    kube.bump("Pod", name)


def write_checkpoint(kube: FakeKube, shard: int, cp: Checkpoint, name: str = NAME) -> None:
    """Play the importer: write the checkpoint into the pre-created ConfigMap."""
    cm = kube.objects[("ConfigMap", NAMESPACE, f"{name}-ckpt-{shard}")]
    cm["data"] = {"checkpoint.json": cp.to_json()}
    kube.bump("ConfigMap", f"{name}-ckpt-{shard}")
