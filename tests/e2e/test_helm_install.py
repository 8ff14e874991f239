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
from devcluster.testing import wait_for

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


def kubectl(*args: str, check: bool = True) -> str:
    exe = str(paths().bin / "kubectl")
    out = subprocess.run([exe, *args], capture_output=True, text=True, check=False, timeout=120)
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr}{out.stdout}")
    return out.stdout


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=300, check=False, env=os.environ
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}")
    return proc


def can_i(sa: str, verb: str, resource: str, *, namespace: str | None = None) -> bool:
    args = ["auth", "can-i", verb, resource, "--as", sa]
    args += ["--namespace", namespace] if namespace else ["--all-namespaces"]
    return kubectl(*args, check=False).strip() == "yes"


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


def wait_operator_ready(core: client.CoreV1Api, ns: str, release: str) -> Any:
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"

    def ready() -> Any:
        for pod in core.list_namespaced_pod(ns, label_selector=selector).items:
            if pod.status.phase in {"Failed", "Succeeded"}:
                raise AssertionError(f"operator pod ended: {pod.status}")
            for cond in pod.status.conditions or []:
                if cond.type == "Ready" and cond.status == "True":
                    return pod
        return None

    return wait_for(ready, 180, interval=1, what=f"operator pod of {release} Ready")


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
        ]:
            assert can_i(sa, verb, resource, namespace=namespace), f"{sa} cannot {verb} {resource}"
        for verb, resource, ns in [
            ("list", "secrets", namespace),
            ("get", "secrets", namespace),
            ("create", "pods/exec", namespace),
            ("delete", "embeddingimports.eio.dev", namespace),
            ("create", "clusterroles.rbac.authorization.k8s.io", None),
            ("list", "pods", None),  # not cluster-wide
            ("list", "pods", "default"),  # not in another namespace
            ("list", "customresourcedefinitions.apiextensions.k8s.io", None),
            ("list", "namespaces", None),
        ]:
            assert not can_i(sa, verb, resource, namespace=ns), f"{sa} may {verb} {resource}"

        run_helm(helm, "uninstall", release, "--namespace", namespace, "--wait")
        installed = False
        wait_for(
            lambda: not release_objects(k8s_api, release, [namespace]),
            120,
            interval=1,
            what=f"objects of {release} removed",
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
    survives `helm uninstall` thanks to crds.keep."""
    adopt_existing_crd(release, namespace)
    installed = False
    try:
        run_helm(helm, "install", release, str(CHART), "--namespace", namespace)
        installed = True
        wait_operator_ready(core_v1, namespace, release)
        sa = f"system:serviceaccount:{namespace}:{release}-embedding-import-operator"
        for verb, resource in [
            ("list", "embeddingimports.eio.dev"),
            ("create", "pods"),
            ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
            ("watch", "namespaces"),
        ]:
            assert can_i(sa, verb, resource), f"{sa} cannot {verb} {resource} cluster-wide"
        for verb, resource in [
            ("list", "secrets"),
            ("create", "pods/exec"),
            ("create", "clusterroles.rbac.authorization.k8s.io"),
            ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
            ("delete", "namespaces"),
            ("create", "customresourcedefinitions.apiextensions.k8s.io"),
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
