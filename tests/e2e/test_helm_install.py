"""`helm install` of the chart into the dev cluster: the operator pod runs (through the node
agent) and becomes Ready, its ServiceAccount can do what the operator needs and nothing it must
not, and `helm uninstall` leaves no pods, roles or bindings (the CRD stays with crds.keep).

Uses the real Helm CLI (hack/build-helm.sh) and the real API server; skips when either, or the
operator's entry point, is missing.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devcluster.config import paths
from devcluster.testing import free_port, kubectl, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "embedding-import-operator"
CRD = "embeddingimports.eio.dev"


def _find_helm() -> str | None:
    if env := os.environ.get("HELM"):
        return env if Path(env).is_file() else None
    cache = Path(os.environ.get("EIO_CACHE", Path.home() / ".cache" / "eio-devcluster"))
    cached = cache / "bin" / "helm"
    return str(cached) if cached.is_file() else None


def _operator_available() -> bool:
    try:
        import importlib

        return hasattr(importlib.import_module("eio_operator.main"), "main")
    except ImportError:
        return False


@pytest.fixture(scope="module")
def helm(devcluster_kubeconfig: Path) -> str:
    path = _find_helm()
    if path is None:
        pytest.skip("helm CLI not built: run hack/build-helm.sh")
    if not _operator_available():
        pytest.skip("the operator is not available yet (eio_operator.main:main)")
    return path


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=300, check=False, env=os.environ
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}")
    return proc


def free_port_values() -> list[str]:
    """`--set` flags with free metrics/liveness ports: the dev cluster's node agent runs pods
    as host processes, so the default 8080/8081 would collide with other operators there."""
    ports = [free_port(), free_port()]
    return ["--set", f"metrics.port={ports[0]}", "--set", f"livenessProbe.port={ports[1]}"]


def can_i(sa: str, verb: str, resource: str, *, namespace: str | None = None) -> bool:
    """`kubectl auth can-i` as ``sa``; ``resource`` may name a subresource (``pods/exec``).
    Retries while kubectl answers neither yes nor no (API server busy or restarting)."""
    resource, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, resource, "--as", sa]
    if sub:
        args.append(f"--subresource={sub}")
    args += ["--namespace", namespace] if namespace else ["--all-namespaces"]
    answer = wait_for(
        lambda: out if (out := kubectl(*args, check=False).strip()) in {"yes", "no"} else None,
        30,
        interval=1,
        what=f"kubectl {' '.join(args)}",
    )
    return answer == "yes"


def assert_can(sa: str, verb: str, resource: str, namespace: str | None = None) -> None:
    """A grant may take a moment to reach the API server's RBAC cache after install."""
    wait_for(
        lambda: can_i(sa, verb, resource, namespace=namespace),
        20,
        interval=1,
        what=f"{sa} allowed to {verb} {resource} in {namespace or 'all namespaces'}",
    )


def release_objects(k8s_api: client.ApiClient, release: str, namespaces: list[str]) -> list[str]:
    """Everything left that carries the release's instance label (namespaced and cluster)."""
    selector = f"app.kubernetes.io/instance={release}"
    core, apps = client.CoreV1Api(k8s_api), client.AppsV1Api(k8s_api)
    rbac = client.RbacAuthorizationV1Api(k8s_api)
    left: list[str] = []
    for ns in namespaces:
        for kind, lister in [
            ("Pod", core.list_namespaced_pod),
            ("ServiceAccount", core.list_namespaced_service_account),
            ("Service", core.list_namespaced_service),
            ("Deployment", apps.list_namespaced_deployment),
            ("Role", rbac.list_namespaced_role),
            ("RoleBinding", rbac.list_namespaced_role_binding),
        ]:
            left += [
                f"{kind} {ns}/{o.metadata.name}" for o in lister(ns, label_selector=selector).items
            ]
    for kind, cluster_lister in [
        ("ClusterRole", rbac.list_cluster_role),
        ("ClusterRoleBinding", rbac.list_cluster_role_binding),
    ]:
        left += [f"{kind} {o.metadata.name}" for o in cluster_lister(label_selector=selector).items]
    return left


def wait_operator_ready(
    core: client.CoreV1Api, ns: str, release: str, not_named: str | None = None
) -> Any:
    """Wait until the operator pod (other than ``not_named``) is Ready, has finished kopf's
    startup (its log says the ``on_startup`` activity succeeded; the watches start right
    after) and is still Ready without a restart (the node agent marks a running container
    Ready; a crash-looping operator would flap between Ready and restarting)."""
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"

    def ready() -> Any:
        for pod in core.list_namespaced_pod(ns, label_selector=selector).items:
            if pod.metadata.deletion_timestamp or pod.metadata.name == not_named:
                continue
            if pod.status.phase in {"Failed", "Succeeded"}:
                raise AssertionError(f"operator pod ended: {pod.status}")
            for cs in pod.status.container_statuses or []:
                if cs.restart_count:
                    logs = kubectl("logs", pod.metadata.name, "-n", ns, "--previous", check=False)
                    raise AssertionError(f"operator container restarted:\n{logs[-3000:]}")
            for cond in pod.status.conditions or []:
                if cond.type == "Ready" and cond.status == "True":
                    return pod
        return None

    pod = wait_for(ready, 180, interval=1, what=f"operator pod of {release} Ready")

    def started() -> bool:
        logs = kubectl("logs", pod.metadata.name, "-n", ns, check=False)
        return "'on_startup' succeeded" in logs

    wait_for(started, 60, interval=1, what=f"operator pod of {release} through kopf's startup")
    return wait_for(ready, 10, interval=1, what=f"operator pod of {release} still Ready") or pod


def adopt_existing_crd(release: str, ns: str) -> None:
    """Let this release own the CRD that the `crds` fixture (or another test) applied, the way
    Helm adopts an existing object: its ownership label and annotations."""
    kubectl("label", "--overwrite", "crd", CRD, "app.kubernetes.io/managed-by=Helm")
    kubectl(
        "annotate",
        "--overwrite",
        "crd",
        CRD,
        f"meta.helm.sh/release-name={release}",
        f"meta.helm.sh/release-namespace={ns}",
    )


def run_small_import(
    namespace: str, name: str, qdrant_dir: Path, operator_pod: str
) -> dict[str, Any]:
    """Run a two-file import in ``namespace`` through the installed operator: it proves the
    chart's RBAC is enough in practice (pods, checkpoints, per-import importer RBAC, status)."""
    texts = {f"doc{i}.txt": f"Document {i}. " + "Words to embed. " * 10 for i in range(2)}
    kubectl(
        "create", "configmap", f"{name}-texts", "-n", namespace,
        *[f"--from-literal={k}={v}" for k, v in texts.items()],
    )  # fmt: skip
    qdrant_dir.chmod(0o777)  # importer pods run as UID 65532
    doc = {
        "apiVersion": "eio.dev/v1alpha1",
        "kind": "EmbeddingImport",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "sources": {"configMap": {"name": f"{name}-texts"}, "paths": ["."], "format": "text"},
            "qdrant": {"embedded": {"hostPath": {"path": str(qdrant_dir)}}, "collection": "e2e"},
            "importer": {
                "image": "embedding-importer:0.1.0",
                "imagePullPolicy": "Never",
                "resources": {"limits": {"memory": "1Gi"}},
            },
            "embedding": {"threads": 1},
        },
    }
    subprocess.run(
        [str(paths().bin / "kubectl"), "apply", "-f", "-"],
        input=yaml.safe_dump(doc), text=True, check=True, capture_output=True, timeout=60,
    )  # fmt: skip

    def finished() -> dict[str, Any] | None:
        obj = yaml.safe_load(kubectl("get", "ei", name, "-n", namespace, "-o", "yaml"))
        st: dict[str, Any] = obj.get("status") or {}
        if st.get("phase") == "Failed":
            logs = kubectl("logs", operator_pod, "-n", namespace, check=False)
            raise AssertionError(f"import failed: {st}\n{logs[-3000:]}")
        return st if st.get("phase") == "Succeeded" else None

    return wait_for(finished, 300, interval=1, what=f"import {name} Succeeded")


@pytest.fixture
def release() -> str:
    return f"eio-{uuid.uuid4().hex[:6]}"


def test_namespaced_install_rbac_and_uninstall(
    helm: str,
    crds: list[str],
    namespace: str,
    core_v1: client.CoreV1Api,
    k8s_api: client.ApiClient,
    release: str,
    tmp_path: Path,
) -> None:
    installed = False
    try:
        run_helm(
            helm,
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--set",
            "scope=namespace",
            "--set",
            "crds.install=false",  # the `crds` fixture owns the CRD in this session
            *free_port_values(),
        )
        installed = True
        pod = wait_operator_ready(core_v1, namespace, release)
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert env["EIO_WATCH_NAMESPACE"] == namespace

        sa = f"system:serviceaccount:{namespace}:{release}-embedding-import-operator"
        for verb, resource in [
            ("watch", "embeddingimports.eio.dev"),
            ("patch", "embeddingimports.eio.dev"),
            ("patch", "embeddingimports.eio.dev/status"),
            ("create", "pods"),
            ("delete", "pods"),
            ("create", "configmaps"),
            ("update", "configmaps"),
            ("create", "events"),
            ("create", "events.events.k8s.io"),
            ("create", "serviceaccounts"),
            ("create", "roles.rbac.authorization.k8s.io"),
            ("create", "rolebindings.rbac.authorization.k8s.io"),
            ("create", "poddisruptionbudgets.policy"),
            ("patch", "poddisruptionbudgets.policy"),
        ]:
            assert_can(sa, verb, resource, namespace)
        for verb, resource, ns in [
            ("list", "secrets", namespace),
            ("get", "secrets", namespace),
            ("create", "pods/exec", namespace),
            ("delete", "embeddingimports.eio.dev", namespace),
            ("get", "pods/log", namespace),
            ("delete", "configmaps", namespace),  # children go by garbage collection
            ("delete", "poddisruptionbudgets.policy", namespace),  # garbage collection too
            ("patch", "configmaps", namespace),  # get + update (replace) is all it uses
            ("delete", "embeddingimports.eio.dev/status", namespace),
            ("create", "clusterroles.rbac.authorization.k8s.io", None),
            ("list", "pods", None),  # not cluster-wide
            ("list", "pods", "default"),  # not in another namespace
            ("list", "customresourcedefinitions.apiextensions.k8s.io", None),
            ("list", "namespaces", None),
        ]:
            assert not can_i(sa, verb, resource, namespace=ns), f"{sa} may {verb} {resource}"

        # The operator works with exactly these rules: a real import runs to completion, with
        # the per-import importer ServiceAccount/Role/RoleBinding made by the operator.
        status = run_small_import(namespace, "helm-smoke", tmp_path, pod.metadata.name)
        assert status["progress"] == "2/2 (100%)", status
        rbac = client.RbacAuthorizationV1Api(k8s_api)
        role = rbac.read_namespaced_role("helm-smoke-importer", namespace)
        assert role.metadata.owner_references[0].kind == "EmbeddingImport"
        assert role.rules[0].resource_names == ["helm-smoke-ckpt-0"]
        assert rbac.read_namespaced_role_binding("helm-smoke-importer", namespace)
        assert core_v1.read_namespaced_service_account("helm-smoke-importer", namespace)
        # This operator watches only `namespace`, so any handler it ran was for this import or
        # its pods (another, cluster-wide operator on the shared cluster may have been quicker:
        # kopf retries its forbidden namespace/CRD scans for about a minute before it serves).
        logs = wait_for(
            lambda: (
                out
                if "on_import_change"
                in (out := kubectl("logs", pod.metadata.name, "-n", namespace))
                else None
            ),
            150,
            interval=2,
            what="the installed operator handling the import",
        )
        # The only 403s allowed are kopf's cluster-wide scans of namespaces and CRDs, which it
        # falls back from in namespace scope (docs/install.md, "RBAC").
        forbidden = [
            line
            for line in logs.splitlines()
            if "Forbidden" in line
            and "/api/v1/namespaces ->" not in line
            and "customresourcedefinitions" not in line
        ]
        assert not forbidden, "\n".join(forbidden[:5])
        # Delete the import while the operator runs, so its finalizer completes.
        kubectl("delete", "ei", "helm-smoke", "-n", namespace, "--wait=true", "--timeout=120s")

        # Upgrade: a changed value rolls the operator (Recreate: the old pod goes first).
        run_helm(
            helm, "upgrade", release, str(CHART), "--namespace", namespace, "--reuse-values",
            "--set", "operator.logFormat=json",
        )  # fmt: skip
        new_pod = wait_operator_ready(core_v1, namespace, release, not_named=pod.metadata.name)
        assert {e.name: e.value for e in new_pod.spec.containers[0].env}["EIO_LOG_FORMAT"] == "json"
        wait_for(
            lambda: all(
                p.metadata.name == new_pod.metadata.name
                for p in core_v1.list_namespaced_pod(
                    namespace, label_selector=f"app.kubernetes.io/instance={release}"
                ).items
            ),
            60,
            interval=1,
            what="the old operator pod gone",
        )

        run_helm(helm, "uninstall", release, "--namespace", namespace, "--wait")
        installed = False
        wait_for(
            lambda: not release_objects(k8s_api, release, [namespace]),
            120,
            interval=1,
            what=f"objects of {release} removed",
        )
        # Nothing else is left running either: importer pods went with their import.
        wait_for(
            lambda: not core_v1.list_namespaced_pod(namespace).items,
            120,
            interval=1,
            what=f"no pods left in {namespace}",
        )
    finally:
        if installed:
            run_helm(helm, "uninstall", release, "--namespace", namespace, check=False)


def test_cluster_install_keeps_the_crd(
    helm: str,
    crds: list[str],
    namespace: str,
    core_v1: client.CoreV1Api,
    k8s_api: client.ApiClient,
    release: str,
) -> None:
    """Cluster scope: ClusterRole rules hold everywhere; the CRD (owned by the release here)
    survives `helm uninstall` thanks to crds.keep.

    The operator process itself is not started here (an image name the node agent does not
    map, so the pod stays in ErrImagePull): a second cluster-wide operator would act on every
    import of the shared dev cluster, next to the one other tests run. The namespaced test
    covers the running operator."""
    adopt_existing_crd(release, namespace)
    installed = False
    try:
        run_helm(
            helm, "install", release, str(CHART), "--namespace", namespace,
            "--set", "image.repository=embedding-import-operator-inert-e2e",
        )  # fmt: skip
        installed = True
        sa = f"system:serviceaccount:{namespace}:{release}-embedding-import-operator"
        for verb, resource in [
            ("list", "embeddingimports.eio.dev"),
            ("create", "pods"),
            ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
            ("watch", "namespaces"),
            ("get", "nodes"),  # node-loss handling (ClusterRole <fullname>-nodes)
        ]:
            assert_can(sa, verb, resource)
        for verb, resource in [
            ("list", "secrets"),
            ("create", "pods/exec"),
            ("create", "clusterroles.rbac.authorization.k8s.io"),
            ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
            ("delete", "namespaces"),
            ("create", "customresourcedefinitions.apiextensions.k8s.io"),
            ("list", "nodes"),
            ("patch", "nodes"),
        ]:
            assert not can_i(sa, verb, resource), f"{sa} may {verb} {resource}"
        crd = yaml.safe_load(kubectl("get", "crd", CRD, "-o", "yaml"))
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

        run_helm(helm, "uninstall", release, "--namespace", namespace, "--wait")
        installed = False
        wait_for(
            lambda: not release_objects(k8s_api, release, [namespace]),
            120,
            interval=1,
            what=f"objects of {release} removed",
        )
        ext = client.ApiextensionsV1Api(k8s_api)
        assert ext.read_custom_resource_definition(CRD).metadata.name == CRD
    finally:
        if installed:
            run_helm(helm, "uninstall", release, "--namespace", namespace, check=False)
