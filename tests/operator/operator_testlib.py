"""Helpers for the operator's unit tests: example specs, observed pods and checkpoints."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from eio_operator.models import EmbeddingImportSpec
from eio_operator.observe import ObservedPod, Termination

from importer.contract import Checkpoint, Heartbeat, encode_ranges

NOW = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
NAME = "imp"
NAMESPACE = "team-a"
UID = "11111111-2222-3333-4444-555555555555"

BASE_SPEC: dict[str, Any] = {
    "sources": {"hostPath": {"path": "/srv/conversations"}, "paths": ["**/*.jsonl"],
                "format": "claude"},
    "embedding": {"model": "paraphrase-MiniLM-L3-v2", "batchSize": 32},
    "qdrant": {"embedded": {"hostPath": {"path": "/var/lib/eio/qdrant"}},
               "collection": "conversations"},
    "importer": {"image": "embedding-importer:0.1.0",
                 "resources": {"limits": {"memory": "1Gi"}}},
    "memoryPolicy": {"threshold": "85%", "growFactor": 1.5, "maxMemoryLimit": "2Gi",
                     "oomsBeforeGrow": 2, "retryBudget": 2, "backoffSeconds": 10,
                     "maxBackoffSeconds": 300, "stallSeconds": 300,
                     "overThresholdGraceSeconds": 60, "keepTerminatedPods": 2},
}


def spec_dict(**patch: Any) -> dict[str, Any]:
    """BASE_SPEC with dotted-path overrides, e.g. spec_dict(**{"importer.image": "x"})."""
    out = copy.deepcopy(BASE_SPEC)
    for dotted, value in patch.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return out


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
) -> Checkpoint:
    cp = Checkpoint(
        shard=shard,
        shards=1,
        filesTotal=total,
        done=encode_ranges(range(files_done)),
        attempt=attempt,
        complete=complete,
        heartbeat=Heartbeat(
            time=NOW - timedelta(seconds=hb_ago), memoryBytes=memory_mi * 2**20, pod=hb_pod
        ),
    )
    cp.counters.points = points
    return cp


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
