"""Pure manifest builders: importer pod, checkpoint ConfigMap, importer RBAC."""

from __future__ import annotations

from typing import Any

import pytest
from eio_operator import builders
from eio_operator.builders import Owner
from operator_testlib import NAME, NAMESPACE, UID, make_spec

from eio_common import contract

OWNER = Owner(name=NAME, namespace=NAMESPACE, uid=UID)
IMAGE = "embedding-importer:0.1.0"


def build(shard: int = 0, attempt: int = 1, limit: int = 2**30, **patch: Any) -> dict[str, Any]:
    return builders.importer_pod(OWNER, make_spec(**patch), shard, attempt, limit, IMAGE)


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    env = pod["spec"]["containers"][0]["env"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in env}


def test_pod_name_labels_owner() -> None:
    pod = build(shard=1, attempt=4, **{"parallelism.shards": 2})
    meta = pod["metadata"]
    assert meta["name"] == contract.pod_name(NAME, 1, 4) == f"{NAME}-s1-a4"
    assert meta["namespace"] == NAMESPACE
    assert meta["labels"] == {
        "app.kubernetes.io/name": "embedding-importer",
        "app.kubernetes.io/instance": NAME,
        "app.kubernetes.io/component": "importer",
        "app.kubernetes.io/managed-by": "embedding-import-operator",
        "app.kubernetes.io/part-of": "embedding-import",
        "eio.dev/import": NAME,
        "eio.dev/shard": "1",
        "eio.dev/attempt": "4",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "eio.dev/v1alpha1",
            "kind": "EmbeddingImport",
            "name": NAME,
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_pod_security_context() -> None:
    pod = build()
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = spec["containers"][0]["securityContext"]
    assert c == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_pod_resources_guaranteed_memory_by_default() -> None:
    res = build()["spec"]["containers"][0]["resources"]
    assert res == {"requests": {"memory": "1Gi"}, "limits": {"memory": "1Gi"}}


def test_pod_resources_grown_limit_and_explicit_request() -> None:
    res = build(
        limit=3 * 2**29,
        **{
            "importer.resources.requests": {"memory": "256Mi", "cpu": "500m"},
            "importer.resources.limits.cpu": 2,
        },
    )["spec"]["containers"][0]["resources"]
    assert res == {
        "requests": {"memory": "256Mi", "cpu": "500m"},
        "limits": {"memory": "1536Mi", "cpu": "2"},
    }
    assert build(limit=3 * 2**29)["metadata"]["annotations"]["eio.dev/memory-limit"] == "1536Mi"


def test_pod_env() -> None:
    env = env_of(
        build(
            shard=0,
            attempt=3,
            **{"chunking": {"size": 400, "overlap": 40}, "memoryPolicy.recycleEveryFiles": 25},
        )
    )
    assert env["IMPORTER_SOURCE"] == "/data/sources/**/*.jsonl"
    assert env["IMPORTER_FORMAT"] == "claude"
    assert env["IMPORTER_JSONL_FIELD"] == "text"
    assert env["IMPORTER_COLLECTION"] == "conversations"
    assert env["IMPORTER_CREATE_COLLECTION"] == "true"
    assert env["IMPORTER_QDRANT_PATH"] == "/data/qdrant"
    assert "IMPORTER_QDRANT_URL" not in env
    assert env["IMPORTER_MODEL"] == "paraphrase-MiniLM-L3-v2"
    assert "IMPORTER_MODEL_DIR" not in env
    assert env["IMPORTER_CHECKPOINT"] == f"configmap:{NAMESPACE}/{NAME}-ckpt-0"
    assert env["IMPORTER_MEMORY_THRESHOLD"] == "85%"
    assert env["IMPORTER_RECYCLE_EVERY_FILES"] == "25"
    assert env["IMPORTER_BATCH_SIZE"] == "32"
    assert env["IMPORTER_TOKEN_BUDGET"] == "8192"
    assert env["IMPORTER_THREADS"] == "0"
    assert env["IMPORTER_CHUNK_SIZE"] == "400"
    assert env["IMPORTER_CHUNK_OVERLAP"] == "40"
    assert env["IMPORTER_SHARD"] == "0/1"
    assert env["IMPORTER_ATTEMPT"] == "3"
    assert env["IMPORTER_METRICS_PORT"] == "9090"
    assert env["IMPORTER_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "IMPORTER_QDRANT_API_KEY" not in env


def test_pod_env_live_source_defaults() -> None:
    # Mode Once, the defaults of spec.sources: every variable is set, so the importer never
    # falls back to a default of its own that could differ.
    env = env_of(build())
    assert env["IMPORTER_FOLLOW"] == "false"
    assert env["IMPORTER_ON_DELETE"] == "keep"
    assert env["IMPORTER_POLL_INTERVAL"] == "10"
    assert env["IMPORTER_SETTLE_SECONDS"] == "5"
    assert env["IMPORTER_INCLUDE_TOOLS"] == "false"


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"mode": "Continuous"}, {"IMPORTER_FOLLOW": "true"}),
        ({"mode": "Once"}, {"IMPORTER_FOLLOW": "false"}),
        ({"sources.onDelete": "Delete"}, {"IMPORTER_ON_DELETE": "delete"}),
        ({"sources.onDelete": "Keep"}, {"IMPORTER_ON_DELETE": "keep"}),
        ({"sources.pollIntervalSeconds": 3}, {"IMPORTER_POLL_INTERVAL": "3"}),
        ({"sources.settleSeconds": 0}, {"IMPORTER_SETTLE_SECONDS": "0"}),
        ({"sources.settleSeconds": 30}, {"IMPORTER_SETTLE_SECONDS": "30"}),
        ({"sources.includeTools": True}, {"IMPORTER_INCLUDE_TOOLS": "true"}),
        (
            {
                "mode": "Continuous",
                "sources.onDelete": "Delete",
                "sources.pollIntervalSeconds": 1,
                "sources.includeTools": True,
            },
            {
                "IMPORTER_FOLLOW": "true",
                "IMPORTER_ON_DELETE": "delete",
                "IMPORTER_POLL_INTERVAL": "1",
                "IMPORTER_INCLUDE_TOOLS": "true",
            },
        ),
    ],
)
def test_pod_env_live_sources(patch: dict[str, Any], expected: dict[str, str]) -> None:
    env = env_of(build(**patch))
    assert {k: env[k] for k in expected} == expected


def test_pod_env_server_with_api_key_and_extra_env() -> None:
    env = env_of(
        build(
            **{
                "qdrant.embedded": None,
                "qdrant.url": "https://qdrant.example:6333",
                "qdrant.apiKeySecretRef": {"name": "qdrant", "key": "api-key"},
                "importer.env": [
                    {"name": "MALLOC_ARENA_MAX", "value": "2"},
                    {"name": "IMPORTER_FAULT_HOLD_MB_PER_FILE", "value": "20"},
                ],
                "sources.paths": [".", "b/*.txt"],
            }
        )
    )
    assert env["IMPORTER_QDRANT_URL"] == "https://qdrant.example:6333"
    assert "IMPORTER_QDRANT_PATH" not in env
    assert env["IMPORTER_QDRANT_API_KEY"] == {"secretKeyRef": {"name": "qdrant", "key": "api-key"}}
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert env["IMPORTER_FAULT_HOLD_MB_PER_FILE"] == "20"
    assert env["IMPORTER_SOURCE"] == "/data/sources,/data/sources/b/*.txt"


def test_shards_get_their_own_qdrant_directory() -> None:
    env = env_of(build(shard=2, **{"parallelism.shards": 3}))
    assert env["IMPORTER_SHARD"] == "2/3"
    assert env["IMPORTER_QDRANT_PATH"] == "/data/qdrant/shard-2"
    assert env["IMPORTER_CHECKPOINT"] == f"configmap:{NAMESPACE}/{NAME}-ckpt-2"


def test_pod_volumes_hostpath() -> None:
    pod = build()
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert volumes["sources"]["hostPath"] == {"path": "/srv/conversations", "type": "Directory"}
    assert volumes["qdrant"]["hostPath"] == {
        "path": "/var/lib/eio/qdrant",
        "type": "DirectoryOrCreate",
    }
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert mounts["sources"] == {"name": "sources", "mountPath": "/data/sources", "readOnly": True}
    assert mounts["qdrant"] == {"name": "qdrant", "mountPath": "/data/qdrant"}
    assert mounts["tmp"] == {"name": "tmp", "mountPath": "/tmp"}


@pytest.mark.parametrize(
    ("patch", "volume"),
    [
        (
            {"sources.hostPath": None, "sources.persistentVolumeClaim": {"claimName": "data"}},
            {"persistentVolumeClaim": {"claimName": "data", "readOnly": True}},
        ),
        (
            {"sources.hostPath": None, "sources.configMap": {"name": "texts"}},
            {"configMap": {"name": "texts"}},
        ),
    ],
)
def test_pod_source_volume_kinds(patch: dict[str, Any], volume: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in build(**patch)["spec"]["volumes"]}
    assert volumes["sources"] == {"name": "sources", **volume}


def test_pod_without_embedded_qdrant_has_no_qdrant_volume() -> None:
    pod = build(**{"qdrant.embedded": None, "qdrant.url": "http://q:6333"})
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["sources", "tmp"]


def test_pod_qdrant_pvc() -> None:
    pod = build(**{"qdrant.embedded": {"persistentVolumeClaim": {"claimName": "qd"}}})
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["qdrant"] == {"name": "qdrant", "persistentVolumeClaim": {"claimName": "qd"}}


def test_pod_image_and_service_account() -> None:
    pod = build(**{"importer.image": None})
    c = pod["spec"]["containers"][0]
    assert c["image"] == IMAGE
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"] == ["run"]
    assert c["ports"][0] == {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
    assert pod["spec"]["serviceAccountName"] == f"{NAME}-importer"
    own = build(**{"importer.serviceAccountName": "mine", "importer.metricsPort": 0})
    assert own["spec"]["serviceAccountName"] == "mine"
    assert [p["name"] for p in own["spec"]["containers"][0]["ports"]] == ["qdrant-http"]


def test_checkpoint_configmap() -> None:
    cm = builders.checkpoint_configmap(OWNER, 3)
    assert cm["metadata"]["name"] == f"{NAME}-ckpt-3"
    assert cm["metadata"]["labels"]["eio.dev/shard"] == "3"
    assert "eio.dev/attempt" not in cm["metadata"]["labels"]
    assert cm["metadata"]["ownerReferences"][0]["uid"] == UID
    assert cm["data"] == {}  # the importer writes checkpoint.json


def test_importer_rbac_is_limited_to_the_checkpoints() -> None:
    sa, role, binding = builders.importer_rbac(OWNER, 2)
    assert sa["kind"] == "ServiceAccount"
    assert sa["metadata"]["name"] == f"{NAME}-importer"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [f"{NAME}-ckpt-0", f"{NAME}-ckpt-1"],
            "verbs": ["get", "update"],
        }
    ]
    assert binding["roleRef"]["name"] == f"{NAME}-importer"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{NAME}-importer", "namespace": NAMESPACE}
    ]
    for obj in (sa, role, binding):
        assert obj["metadata"]["ownerReferences"][0]["uid"] == UID


def test_long_import_name_gives_valid_pod_names() -> None:
    owner = Owner(name="x" * 63, namespace=NAMESPACE, uid=UID)
    pod = builders.importer_pod(owner, make_spec(), 12, 1234, 2**30, IMAGE)
    assert len(pod["metadata"]["name"]) <= 63


# ------------------------------------------------------------- the read API of an embedded store
def test_an_embedded_store_is_served_and_reached_through_services() -> None:
    spec = make_spec(**{"parallelism.shards": 3})
    services = builders.read_services(OWNER, spec)
    names = [s["metadata"]["name"] for s in services]
    assert names == [f"{NAME}-reads", f"{NAME}-reads-0", f"{NAME}-reads-1", f"{NAME}-reads-2"]
    assert services[0]["spec"]["selector"] == {"eio.dev/import": NAME}
    assert services[2]["spec"]["selector"] == {"eio.dev/import": NAME, "eio.dev/shard": "1"}
    assert services[0]["spec"]["ports"] == [
        {"name": "qdrant-http", "port": 6333, "targetPort": "qdrant-http", "protocol": "TCP"}
    ]
    assert all(s["metadata"]["ownerReferences"][0]["uid"] == UID for s in services)
    ips = {0: "10.0.0.10", 1: "10.0.0.11", 2: "10.0.0.12"}
    peers = builders.read_peers(spec, 1, ips)
    assert peers == ["http://10.0.0.10:6333", "http://10.0.0.12:6333"]
    pod = builders.importer_pod(OWNER, spec, 1, 1, 2**30, IMAGE, peers)
    env = env_of(pod)
    assert env["IMPORTER_READ_ADDRESS"] == "0.0.0.0:6333"
    assert env["IMPORTER_READ_PEERS"] == "http://10.0.0.10:6333,http://10.0.0.12:6333"
    c = pod["spec"]["containers"][0]
    assert {"name": "qdrant-http", "containerPort": 6333, "protocol": "TCP"} in c["ports"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "qdrant-http"}


def test_one_shard_has_one_service_and_no_peers() -> None:
    spec = make_spec()
    assert [s["metadata"]["name"] for s in builders.read_services(OWNER, spec)] == [f"{NAME}-reads"]
    assert "IMPORTER_READ_PEERS" not in env_of(build())


def test_a_qdrant_server_needs_no_read_api() -> None:
    patch = {"qdrant.url": "http://qdrant:6333", "qdrant.embedded": None}
    assert builders.read_services(OWNER, make_spec(**patch)) == []
    pod = build(**patch, **{"importer.metricsPort": 0})
    assert "IMPORTER_READ_ADDRESS" not in env_of(pod)
    assert "readinessProbe" not in pod["spec"]["containers"][0]
    assert "ports" not in pod["spec"]["containers"][0]


def test_no_disruption_budget_unless_asked() -> None:
    assert builders.disruption_budget(OWNER, make_spec()) is None


@pytest.mark.parametrize("max_unavailable", [0, 1])
def test_disruption_budget_covers_every_importer_pod(max_unavailable: int) -> None:
    spec = make_spec(**{"importer.podDisruptionBudget": {"maxUnavailable": max_unavailable}})
    pdb = builders.disruption_budget(OWNER, spec)
    assert pdb is not None
    assert (pdb["apiVersion"], pdb["kind"]) == ("policy/v1", "PodDisruptionBudget")
    assert pdb["metadata"]["name"] == f"{NAME}-importer"
    assert pdb["metadata"]["namespace"] == NAMESPACE
    assert pdb["metadata"]["ownerReferences"][0]["uid"] == UID
    assert pdb["spec"] == {
        "maxUnavailable": max_unavailable,
        "selector": {"matchLabels": {"eio.dev/import": NAME}},
    }
    # the selector matches every shard's pods, whatever the attempt
    labels = build(shard=1, attempt=3, **{"parallelism.shards": 2})["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_disruption_budget_default_and_bounds() -> None:
    spec = make_spec(**{"importer.podDisruptionBudget": {}})
    assert spec.importer.pod_disruption_budget is not None
    assert spec.importer.pod_disruption_budget.max_unavailable == 0
    with pytest.raises(ValueError, match="less than or equal to 1"):
        make_spec(**{"importer.podDisruptionBudget": {"maxUnavailable": 2}})
