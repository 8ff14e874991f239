"""Render the chart with `helm template` (defaults and every switch) and check the objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .conftest import NAMESPACE, RELEASE, ROOT, Rendered

FULLNAME = f"{RELEASE}-embedding-import-operator"
APP_VERSION = "0.1.0"

Render = Callable[..., Rendered]


def rules_by_resource(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """{(apiGroup, resource): verbs} of a Role/ClusterRole (resourceNames kept apart)."""
    table: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        if rule.get("resourceNames"):
            continue
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return table


# What the operator needs in either scope (see docs/install.md, "RBAC").
OPERATOR_RULES = {
    ("eio.dev", "embeddingimports"): {"get", "list", "watch", "patch"},
    ("eio.dev", "embeddingimports/status"): {"get", "patch", "update"},
    ("", "pods"): {"get", "list", "watch", "create", "delete"},
    ("eio.dev", "embeddingimports/finalizers"): {"update"},
    ("", "configmaps"): {"get", "list", "watch", "create", "update"},
    ("", "services"): {"get", "list", "create"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("", "serviceaccounts"): {"get", "create"},
    ("rbac.authorization.k8s.io", "roles"): {"get", "create"},
    ("rbac.authorization.k8s.io", "rolebindings"): {"get", "create"},
    ("policy", "poddisruptionbudgets"): {"create", "patch"},
}
CLUSTER_ONLY_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}


def assert_never_granted(role: dict[str, Any]) -> None:
    for rule in role["rules"]:
        assert "*" not in rule["verbs"], rule
        assert "*" not in rule["resources"], rule
        assert "*" not in rule["apiGroups"], rule
        for forbidden in ("secrets", "pods/exec", "pods/attach", "pods/portforward", "nodes"):
            assert forbidden not in rule["resources"], rule
        assert not {"escalate", "impersonate", "bind"} & set(rule["verbs"]), rule
        assert not rule.get("resourceNames"), rule
        assert rule["resources"] != ["clusterroles"]
        assert rule["resources"] != ["clusterrolebindings"]


# ---------------------------------------------------------------- defaults


def test_default_objects(render: Render, crd_present: bool) -> None:
    out = render()
    expected = [
        "ClusterRole",
        "ClusterRole",  # <fullname>-nodes: get nodes (node-loss handling)
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    if crd_present:
        expected.append("CustomResourceDefinition")
    assert out.kinds() == sorted(expected)


def test_every_object_has_the_release_labels(render: Render) -> None:
    for obj in render().objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "embedding-import-operator", obj["kind"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "embedding-import"
        assert labels["app.kubernetes.io/version"] == APP_VERSION
        assert labels["helm.sh/chart"] == f"embedding-import-operator-{APP_VERSION}"
        assert labels["app.kubernetes.io/component"]


def test_namespaced_objects_are_in_the_release_namespace(render: Render) -> None:
    for obj in render().objects:
        if obj["kind"] in {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}:
            assert "namespace" not in obj["metadata"], obj["kind"]
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


def test_deployment_shape(render: Render) -> None:
    out = render()
    deploy = out.one("Deployment", FULLNAME)
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels["app.kubernetes.io/component"] == "operator"
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == FULLNAME
    assert pod["automountServiceAccountToken"] is True
    assert "priorityClassName" not in pod
    assert "imagePullSecrets" not in pod
    for key in ("nodeSelector", "tolerations", "affinity"):
        assert key not in pod


def test_pod_security(render: Render) -> None:
    out = render()
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    sc = out.container()["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # /tmp is the only writable path: an emptyDir with a size limit.
    assert out.container()["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]


def test_container_image_ports_probe_resources(render: Render) -> None:
    out = render()
    c = out.container()
    assert c["image"] == f"embedding-import-operator:{APP_VERSION}"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert "command" not in c
    assert "args" not in c
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "healthz": 8081}
    probe = c["livenessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert probe["failureThreshold"] >= 1
    assert c["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }


def test_operator_env_defaults(render: Render) -> None:
    env = render().env()
    assert env["EIO_WATCH_NAMESPACE"] == ""
    assert env["EIO_DEFAULT_IMPORTER_IMAGE"] == f"embedding-importer:{APP_VERSION}"
    assert env["EIO_METRICS_PORT"] == "8080"
    assert env["EIO_LIVENESS_PORT"] == "8081"
    assert env["EIO_RESYNC_INTERVAL_SECONDS"] == "10"
    assert env["EIO_LOG_FORMAT"] == "plain"
    assert env["EIO_WORKERS"] == "8"
    assert env["EIO_WATCH_SERVER_TIMEOUT_SECONDS"] == "120"
    assert env["EIO_WATCH_CLIENT_TIMEOUT_SECONDS"] == "150"


def test_metrics_service(render: Render) -> None:
    out = render()
    svc = out.one("Service", f"{FULLNAME}-metrics")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = out.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_service_account(render: Render) -> None:
    sa = render().one("ServiceAccount", FULLNAME)
    assert sa["automountServiceAccountToken"] is True
    assert "annotations" not in sa["metadata"]


# ---------------------------------------------------------------- RBAC


def test_cluster_rbac(render: Render) -> None:
    out = render()
    role = out.one("ClusterRole", FULLNAME)
    assert rules_by_resource(role) == OPERATOR_RULES | CLUSTER_ONLY_RULES
    assert_never_granted(role)
    binding = out.one("ClusterRoleBinding", FULLNAME)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": FULLNAME,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    ]
    assert not out.all("Role")
    assert not out.all("RoleBinding")


def test_nodes_role_is_get_only_and_switchable(render: Render) -> None:
    out = render()
    role = out.one("ClusterRole", f"{FULLNAME}-nodes")
    assert rules_by_resource(role) == {("", "nodes"): {"get"}}
    binding = out.one("ClusterRoleBinding", f"{FULLNAME}-nodes")
    assert binding["roleRef"]["name"] == f"{FULLNAME}-nodes"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    ]
    names = [r["metadata"]["name"] for r in render({"rbac": {"nodes": False}}).all("ClusterRole")]
    assert names == [FULLNAME]


def test_namespaced_rbac_in_the_release_namespace(render: Render) -> None:
    out = render({"scope": "namespace"})
    assert not out.all("ClusterRole")
    assert not out.all("ClusterRoleBinding")
    role = out.one("Role", FULLNAME)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rules_by_resource(role) == OPERATOR_RULES  # no CRD or namespace access
    assert_never_granted(role)
    binding = out.one("RoleBinding", FULLNAME)
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"]["kind"] == "Role"
    env = out.env()
    assert env["EIO_WATCH_NAMESPACE"] == NAMESPACE


def test_namespaced_rbac_in_another_watch_namespace(render: Render) -> None:
    out = render({"scope": "namespace", "watchNamespace": "imports"})
    for kind in ("Role", "RoleBinding"):
        for obj in out.all(kind):
            assert obj["metadata"]["namespace"] == "imports"
    binding = out.one("RoleBinding", FULLNAME)
    # The operator's ServiceAccount stays in the release namespace.
    assert binding["subjects"][0]["namespace"] == NAMESPACE
    assert out.one("ServiceAccount")["metadata"]["namespace"] == NAMESPACE
    assert out.env()["EIO_WATCH_NAMESPACE"] == "imports"


def test_watch_namespace_with_cluster_scope_is_an_error(render_error: Callable[..., str]) -> None:
    err = render_error({"watchNamespace": "imports"})
    assert "watchNamespace is only used with scope=namespace" in err


def test_rbac_off(render: Render) -> None:
    out = render({"rbac": {"create": False}})
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not out.all(kind)
    assert out.one("Deployment")


# ---------------------------------------------------------------- switches


def test_service_monitor(render: Render) -> None:
    out = render(
        {
            "metrics": {
                "serviceMonitor": {
                    "enabled": True,
                    "labels": {"release": "prometheus"},
                    "interval": "15s",
                    "scrapeTimeout": "10s",
                }
            }
        }
    )
    sm = out.one("ServiceMonitor", FULLNAME)
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["namespace"] == NAMESPACE
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    svc_labels = out.one("Service")["metadata"]["labels"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc_labels.items()


def test_service_monitor_in_another_namespace(render: Render) -> None:
    sm = render({"metrics": {"serviceMonitor": {"enabled": True, "namespace": "monitoring"}}}).one(
        "ServiceMonitor"
    )
    assert sm["metadata"]["namespace"] == "monitoring"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert "scrapeTimeout" not in sm["spec"]["endpoints"][0]


def test_service_monitor_needs_the_service(render_error: Callable[..., str]) -> None:
    err = render_error(
        {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}
    )
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in err


def test_metrics_service_off_and_other_ports(render: Render) -> None:
    out = render(
        {"metrics": {"port": 9100, "service": {"enabled": False}}, "livenessProbe": {"port": 9101}}
    )
    assert not out.all("Service")
    ports = {p["name"]: p["containerPort"] for p in out.container()["ports"]}
    assert ports == {"metrics": 9100, "healthz": 9101}
    assert out.env()["EIO_METRICS_PORT"] == "9100"
    assert out.env()["EIO_LIVENESS_PORT"] == "9101"


def test_metrics_service_type_and_annotations(render: Render) -> None:
    svc = render(
        {
            "metrics": {
                "service": {"type": "NodePort", "annotations": {"prometheus.io/scrape": "true"}}
            }
        }
    ).one("Service")
    assert svc["spec"]["type"] == "NodePort"
    assert svc["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}


def test_crds_off(render: Render) -> None:
    assert not render({"crds": {"install": False}}).all("CustomResourceDefinition")


def test_custom_images(render: Render) -> None:
    out = render(
        {
            "image": {
                "registry": "registry.example.com/ml/",
                "tag": "1.2.3",
                "pullPolicy": "Always",
            },
            "importer": {
                "image": {
                    "registry": "registry.example.com/ml",
                    "repository": "my-importer",
                    "digest": "sha256:" + "a" * 64,
                }
            },
            "imagePullSecrets": [{"name": "regcred"}],
        }
    )
    c = out.container()
    assert c["image"] == "registry.example.com/ml/embedding-import-operator:1.2.3"
    assert c["imagePullPolicy"] == "Always"
    assert out.env()["EIO_DEFAULT_IMPORTER_IMAGE"] == (
        "registry.example.com/ml/my-importer@sha256:" + "a" * 64
    )
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_resources_and_scheduling(render: Render) -> None:
    out = render(
        {
            "resources": {
                "requests": {"cpu": "200m", "memory": "300Mi"},
                "limits": {"memory": "1Gi"},
            },
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "pool", "operator": "In", "values": ["ops"]}
                                ]
                            }
                        ]
                    }
                }
            },
            "priorityClassName": "system-cluster-critical",
            "podAnnotations": {"example.com/a": "b"},
            "podLabels": {"team": "ml"},
            "tmpSizeLimit": "128Mi",
        }
    )
    c = out.container()
    assert c["resources"] == {
        "requests": {"cpu": "200m", "memory": "300Mi"},
        "limits": {"memory": "1Gi"},
    }
    pod_template = out.one("Deployment")["spec"]["template"]
    pod = pod_template["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod_template["metadata"]["annotations"] == {"example.com/a": "b"}
    assert pod_template["metadata"]["labels"]["team"] == "ml"
    assert pod["volumes"][0]["emptyDir"]["sizeLimit"] == "128Mi"


def test_operator_settings_and_extra_env(render: Render) -> None:
    out = render(
        {
            "operator": {
                "logFormat": "json",
                "resyncIntervalSeconds": 30,
                "workers": 2,
                "watchServerTimeoutSeconds": 60,
                "watchClientTimeoutSeconds": 90,
                "extraEnv": [
                    {"name": "EIO_SOMETHING", "value": "x"},
                    {
                        "name": "FROM_SECRET",
                        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                    },
                ],
            },
            "livenessProbe": {
                "initialDelaySeconds": 3,
                "periodSeconds": 7,
                "timeoutSeconds": 2,
                "failureThreshold": 2,
            },
        }
    )
    env = out.env()
    assert env["EIO_LOG_FORMAT"] == "json"
    assert env["EIO_RESYNC_INTERVAL_SECONDS"] == "30"
    assert env["EIO_WORKERS"] == "2"
    assert env["EIO_WATCH_SERVER_TIMEOUT_SECONDS"] == "60"
    assert env["EIO_WATCH_CLIENT_TIMEOUT_SECONDS"] == "90"
    assert env["EIO_SOMETHING"] == "x"
    assert env["FROM_SECRET"] == {"secretKeyRef": {"name": "s", "key": "k"}}
    probe = out.container()["livenessProbe"]
    assert (probe["initialDelaySeconds"], probe["periodSeconds"]) == (3, 7)
    assert (probe["timeoutSeconds"], probe["failureThreshold"]) == (2, 2)


def test_security_context_can_be_overridden(render: Render) -> None:
    """Helm deep-merges maps: set a key to change it, set it to null to drop it."""
    out = render({"podSecurityContext": {"runAsUser": 1000, "fsGroup": None}})
    assert out.one("Deployment")["spec"]["template"]["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_existing_service_account(render: Render, render_error: Callable[..., str]) -> None:
    out = render({"serviceAccount": {"create": False, "name": "ops"}})
    assert not out.all("ServiceAccount")
    assert out.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    for binding in out.all("ClusterRoleBinding"):  # the operator's and the nodes one
        assert binding["subjects"][0]["name"] == "ops"
    err = render_error({"serviceAccount": {"create": False}})
    assert "serviceAccount.name is required" in err


def test_service_account_annotations_and_token(render: Render) -> None:
    out = render(
        {"serviceAccount": {"annotations": {"a": "b"}, "automountServiceAccountToken": False}}
    )
    sa = out.one("ServiceAccount")
    assert sa["metadata"]["annotations"] == {"a": "b"}
    assert sa["automountServiceAccountToken"] is False
    assert (
        out.one("Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    )


def test_name_overrides(render: Render) -> None:
    out = render({"fullnameOverride": "eio-op"})
    assert out.one("Deployment")["metadata"]["name"] == "eio-op"
    assert out.one("ClusterRole", "eio-op")
    assert out.one("Service", "eio-op-metrics")
    out = render({"nameOverride": "eiop"})
    assert out.one("Deployment")["metadata"]["name"] == f"{RELEASE}-eiop"
    assert out.one("Deployment")["metadata"]["labels"]["app.kubernetes.io/name"] == "eiop"


# ---------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"unknownKey": 1}, "unknownKey"),
        ({"image": {"tagg": "x"}}, "tagg"),
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "enable"),
        ({"crds": {"install": "yes"}}, "install"),
        ({"scope": "everything"}, "scope"),
        ({"metrics": {"port": 70000}}, "port"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"imagePullSecrets": ["regcred"]}, "imagePullSecrets"),
        ({"tmpSizeLimit": "lots"}, "tmpSizeLimit"),
        ({"metrics": {"serviceMonitor": {"interval": "30 seconds"}}}, "interval"),
    ],
)
def test_schema_rejects(
    render_error: Callable[..., str], values: dict[str, Any], needle: str
) -> None:
    err = render_error(values)
    assert "schema" in err.lower(), err
    assert needle in err, err


def test_schema_and_values_table_are_generated() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gen-chart-schema.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_operator_setting_is_passed(render: Render) -> None:
    """The chart sets every EIO_* setting the operator reads (eio_operator.settings), and no
    EIO_* variable it does not read."""
    settings = pytest.importorskip("eio_operator.settings")
    fields = settings.OperatorSettings.model_fields
    expected = {f"EIO_{name.upper()}" for name in fields}
    passed = {name for name in render().env() if name.startswith("EIO_")}
    assert passed == expected
