"""Pure manifest builders: importer pod, checkpoint ConfigMap, importer RBAC, the Services to
the read API of an embedded store. No I/O.

Every child is named deterministically (``eio_common.contract``), labelled per
docs/decisions.md and owned by its EmbeddingImport (garbage-collected with it).
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from eio_common import contract, quantity
from eio_operator.models import EmbeddingImportSpec

MANAGED_BY: Final = "embedding-import-operator"
CONTAINER: Final = "importer"
SOURCES_MOUNT: Final = "/data/sources"
QDRANT_MOUNT: Final = "/data/qdrant"
TMP_MOUNT: Final = "/tmp"
RUN_AS: Final = 65532  # "nonroot" in distroless images
TMP_SIZE_LIMIT: Final = "1Gi"
TERMINATION_GRACE_SECONDS: Final = 30
READ_PORT_NAME: Final = "qdrant-http"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The EmbeddingImport that owns a child (from its metadata)."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Any) -> Owner:
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])

    def reference(self) -> Manifest:
        return {
            "apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}",
            "kind": contract.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def labels(import_name: str, shard: int | None = None, attempt: int | None = None) -> Manifest:
    out = {
        "app.kubernetes.io/name": "embedding-importer",
        "app.kubernetes.io/instance": import_name,
        "app.kubernetes.io/component": "importer",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "embedding-import",
        contract.LABEL_IMPORT: import_name,
    }
    if shard is not None:
        out[contract.LABEL_SHARD] = str(shard)
    if attempt is not None:
        out[contract.LABEL_ATTEMPT] = str(attempt)
    return out


def selector(import_name: str) -> str:
    """Label selector for every child of one import."""
    return f"{contract.LABEL_IMPORT}={import_name}"


def service_account_name(owner: Owner, spec: EmbeddingImportSpec) -> str:
    return spec.importer.service_account_name or f"{owner.name}-importer"


def _meta(owner: Owner, name: str, lbls: Manifest) -> Manifest:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": lbls,
        "ownerReferences": [owner.reference()],
    }


# --------------------------------------------------------------------------------------------
def checkpoint_configmap(owner: Owner, shard: int) -> Manifest:
    """The shard's checkpoint ConfigMap, created empty: the importer writes ``checkpoint.json``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(
            owner, contract.checkpoint_configmap_name(owner.name, shard), labels(owner.name, shard)
        ),
        "data": {},
    }


def importer_rbac(owner: Owner, shards: int) -> list[Manifest]:
    """ServiceAccount, Role and RoleBinding that let importer pods read and update (only) this
    import's checkpoint ConfigMaps."""
    name = f"{owner.name}-importer"
    lbls = labels(owner.name)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(owner, name, lbls)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(owner, name, lbls),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [
                        contract.checkpoint_configmap_name(owner.name, i) for i in range(shards)
                    ],
                    "verbs": ["get", "update"],  # read + replace with resourceVersion
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(owner, name, lbls),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        },
    ]


def disruption_budget(owner: Owner, spec: EmbeddingImportSpec) -> Manifest | None:
    """``spec.importer.podDisruptionBudget``: a PodDisruptionBudget over the import's importer
    pods (owned by the import), so that a drain or any eviction waits while
    ``maxUnavailable`` pods are already down (0: while a shard runs). None when unset."""
    budget = spec.importer.pod_disruption_budget
    if budget is None:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(owner, f"{owner.name}-importer", labels(owner.name)),
        "spec": {
            "maxUnavailable": budget.max_unavailable,
            "selector": {"matchLabels": {contract.LABEL_IMPORT: owner.name}},
        },
    }


def read_services(owner: Owner, spec: EmbeddingImportSpec) -> list[Manifest]:
    """For an embedded store: a Service to every shard's read API (what users query), and with
    several shards one per shard (the peers a read fans out to, ``importer.fanout``)."""
    if spec.qdrant.embedded is None:
        return []
    shards: list[int | None] = [None]
    if spec.shards > 1:
        shards += list(range(spec.shards))
    return [_read_service(owner, shard) for shard in shards]


def _read_service(owner: Owner, shard: int | None) -> Manifest:
    select = {contract.LABEL_IMPORT: owner.name}
    if shard is not None:
        select[contract.LABEL_SHARD] = str(shard)
    port = {"name": READ_PORT_NAME, "port": contract.READ_PORT, "targetPort": READ_PORT_NAME}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(
            owner, contract.read_service_name(owner.name, shard), labels(owner.name, shard)
        ),
        "spec": {"selector": select, "ports": [{**port, "protocol": "TCP"}]},
    }


def read_peers(spec: EmbeddingImportSpec, shard: int, cluster_ips: dict[int, str]) -> list[str]:
    """The other shards' read APIs, by their Services' cluster IPs (no cluster DNS needed)."""
    return [
        f"http://{ip}:{contract.READ_PORT}"
        for other, ip in sorted(cluster_ips.items())
        if other != shard and other < spec.shards
    ]


# --------------------------------------------------------------------------------------------
def source_globs(spec: EmbeddingImportSpec) -> list[str]:
    """spec.sources.paths as absolute paths under the read-only source mount."""
    return [posixpath.normpath(posixpath.join(SOURCES_MOUNT, p)) for p in spec.sources.paths]


def qdrant_path(spec: EmbeddingImportSpec, shard: int) -> str:
    """Embedded Qdrant directory; one per shard when there are several (one process holds a
    store at a time)."""
    if spec.shards == 1:
        return QDRANT_MOUNT
    return f"{QDRANT_MOUNT}/shard-{shard}"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def importer_env(
    owner: Owner,
    spec: EmbeddingImportSpec,
    shard: int,
    attempt: int,
    peers: Sequence[str] = (),
) -> list[Manifest]:
    """IMPORTER_* variables (docs/decisions.md) followed by the spec's extra env."""
    values = _env_values(owner, spec, shard, attempt)
    if spec.qdrant.embedded is not None:  # the holder answers reads (importer/readapi.py)
        values.append(("IMPORTER_READ_ADDRESS", f"0.0.0.0:{contract.READ_PORT}"))
        values.append(("IMPORTER_READ_PEERS", ",".join(peers) or None))
    env: list[Manifest] = [{"name": k, "value": v} for k, v in values if v is not None]
    env.append(
        {"name": "IMPORTER_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    )
    ref = spec.qdrant.api_key_secret_ref
    if ref is not None:
        env.append(
            {
                "name": "IMPORTER_QDRANT_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    set_here = {e["name"] for e in env}
    env.extend(
        {"name": e.name, "value": e.value} for e in spec.importer.env if e.name not in set_here
    )
    return env


def _env_values(
    owner: Owner, spec: EmbeddingImportSpec, shard: int, attempt: int
) -> list[tuple[str, str | None]]:
    """The plain IMPORTER_* values from the spec (None: not set)."""
    emb, src, q, pol = spec.embedding, spec.sources, spec.qdrant, spec.memory_policy
    return [
        ("IMPORTER_SOURCE", ",".join(source_globs(spec))),
        ("IMPORTER_FORMAT", src.format),
        ("IMPORTER_JSONL_FIELD", src.jsonl_field),
        ("IMPORTER_COLLECTION", q.collection),
        ("IMPORTER_CREATE_COLLECTION", _bool(q.create_collection)),
        ("IMPORTER_QDRANT_URL", q.url),
        ("IMPORTER_QDRANT_PATH", qdrant_path(spec, shard) if q.embedded is not None else None),
        ("IMPORTER_MODEL", emb.model),
        ("IMPORTER_MODEL_DIR", emb.model_dir),
        (
            "IMPORTER_CHECKPOINT",
            f"configmap:{owner.namespace}/{contract.checkpoint_configmap_name(owner.name, shard)}",
        ),
        ("IMPORTER_MEMORY_THRESHOLD", str(pol.threshold)),
        ("IMPORTER_RECYCLE_EVERY_FILES", str(pol.recycle_every_files)),
        ("IMPORTER_BATCH_SIZE", str(emb.batch_size)),
        ("IMPORTER_TOKEN_BUDGET", str(emb.token_budget)),
        ("IMPORTER_THREADS", str(emb.threads)),
        ("IMPORTER_CHUNK_SIZE", None if spec.chunking.size is None else str(spec.chunking.size)),
        (
            "IMPORTER_CHUNK_OVERLAP",
            None if spec.chunking.overlap is None else str(spec.chunking.overlap),
        ),
        ("IMPORTER_SHARD", f"{shard}/{spec.shards}"),
        ("IMPORTER_ATTEMPT", str(attempt)),
        ("IMPORTER_METRICS_PORT", str(spec.importer.metrics_port)),
        # Live sources (mode Continuous follows them; the others apply to every mode).
        ("IMPORTER_FOLLOW", _bool(spec.continuous)),
        ("IMPORTER_ON_DELETE", src.on_delete.lower()),
        ("IMPORTER_POLL_INTERVAL", str(src.poll_interval_seconds)),
        ("IMPORTER_SETTLE_SECONDS", str(src.settle_seconds)),
        ("IMPORTER_INCLUDE_TOOLS", _bool(src.include_tools)),
        ("IMPORTER_VERIFY_INTERVAL_SECONDS", str(spec.verify.interval_seconds)),
        # A build-field change fills a new version beside the active one; with several shards
        # each waits for the operator's switch order (eio_operator.switch).
        ("IMPORTER_REBUILD", "true"),
        ("IMPORTER_KEEP_OLD_VERSIONS", str(q.keep_old_versions)),
        ("IMPORTER_SWITCH_ON_ORDER", _bool(spec.switch_on_order)),
        # Read-only root filesystem: caches and scratch go to the /tmp emptyDir.
        ("HOME", TMP_MOUNT),
        ("XDG_CACHE_HOME", f"{TMP_MOUNT}/.cache"),
    ]


def _volumes(spec: EmbeddingImportSpec) -> tuple[list[Manifest], list[Manifest]]:
    src = spec.sources
    source: Manifest
    if src.host_path is not None:
        source = {"hostPath": {"path": src.host_path.path, "type": src.host_path.type}}
    elif src.persistent_volume_claim is not None:
        source = {
            "persistentVolumeClaim": {
                "claimName": src.persistent_volume_claim.claim_name,
                "readOnly": True,
            }
        }
    else:
        assert src.config_map is not None
        source = {"configMap": {"name": src.config_map.name}}
    volumes: list[Manifest] = [
        {"name": "sources", **source},
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
    ]
    mounts: list[Manifest] = [
        {"name": "sources", "mountPath": SOURCES_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": TMP_MOUNT},
    ]
    emb = spec.qdrant.embedded
    if emb is not None:
        storage: Manifest
        if emb.host_path is not None:
            storage = {"hostPath": {"path": emb.host_path.path, "type": emb.host_path.type}}
        else:
            assert emb.persistent_volume_claim is not None
            claim = emb.persistent_volume_claim.claim_name
            storage = {"persistentVolumeClaim": {"claimName": claim}}
        volumes.insert(1, {"name": "qdrant", **storage})
        mounts.insert(1, {"name": "qdrant", "mountPath": QDRANT_MOUNT})
    return volumes, mounts


def _resources(spec: EmbeddingImportSpec, memory_limit_bytes: int) -> Manifest:
    res = spec.importer.resources
    limit = quantity.format_bytes(memory_limit_bytes)
    if res.requests.memory is not None:
        request = quantity.format_bytes(
            min(quantity.memory_bytes(res.requests.memory), memory_limit_bytes)
        )
    else:
        request = limit  # Guaranteed memory: the scheduler reserves what the limit allows
    requests: Manifest = {"memory": request}
    limits: Manifest = {"memory": limit}
    if res.requests.cpu is not None:
        requests["cpu"] = str(res.requests.cpu)
    if res.limits.cpu is not None:
        limits["cpu"] = str(res.limits.cpu)
    return {"requests": requests, "limits": limits}


def _run_as_nonroot() -> Manifest:
    """The security context pod and container share (restricted Pod Security Standard)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _ports(spec: EmbeddingImportSpec, container: Manifest) -> None:
    """Metrics, and an embedded store's read API (ready once the store is open and served)."""
    ports: list[Manifest] = []
    if spec.importer.metrics_port:
        ports.append(
            {"name": "metrics", "containerPort": spec.importer.metrics_port, "protocol": "TCP"}
        )
    if spec.qdrant.embedded is not None:
        ports.append(
            {"name": READ_PORT_NAME, "containerPort": contract.READ_PORT, "protocol": "TCP"}
        )
        container["readinessProbe"] = {
            "httpGet": {"path": "/readyz", "port": READ_PORT_NAME},
            "initialDelaySeconds": 2,  # the store opens after the model loads
            "periodSeconds": 2,
            "failureThreshold": 1,
        }
    if ports:
        container["ports"] = ports


def importer_pod(
    owner: Owner,
    spec: EmbeddingImportSpec,
    shard: int,
    attempt: int,
    memory_limit_bytes: int,
    default_image: str,
    peers: Sequence[str] = (),
) -> Manifest:
    """One importer pod for one shard attempt; restartPolicy Never (the operator restarts)."""
    volumes, mounts = _volumes(spec)
    container: Manifest = {
        "name": CONTAINER,
        "image": spec.importer.image or default_image,
        "imagePullPolicy": spec.importer.image_pull_policy,
        "args": ["run"],
        "env": importer_env(owner, spec, shard, attempt, peers),
        "resources": _resources(spec, memory_limit_bytes),
        "volumeMounts": mounts,
        "securityContext": {
            **_run_as_nonroot(),
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    _ports(spec, container)
    meta = _meta(
        owner, contract.pod_name(owner.name, shard, attempt), labels(owner.name, shard, attempt)
    )
    meta["annotations"] = {
        f"{contract.LABEL_PREFIX}/memory-limit": quantity.format_bytes(memory_limit_bytes),
        contract.BUILD_HASH_ANNOTATION: spec.build_hash,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": service_account_name(owner, spec),
            "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
            "securityContext": {**_run_as_nonroot(), "fsGroup": RUN_AS},
            "containers": [container],
            "volumes": volumes,
            "topologySpreadConstraints": topology_spread(owner.name),
            **_scheduling(spec),
        },
    }


def _scheduling(spec: EmbeddingImportSpec) -> Manifest:
    """priorityClassName and tolerations, when the spec sets them."""
    out: Manifest = {}
    if spec.importer.priority_class_name:
        out["priorityClassName"] = spec.importer.priority_class_name
    if spec.importer.tolerations:
        out["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in spec.importer.tolerations
        ]
    return out


def topology_spread(import_name: str) -> list[Manifest]:
    """Spread one import's importer pods over nodes, softly (ScheduleAnyway: a one-node cluster
    or a full node still schedules), so that one lost node takes down as few shards as
    possible. The scheduler counts only pods that have not ended."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {contract.LABEL_IMPORT: import_name}},
        }
    ]
