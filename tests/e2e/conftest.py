"""Fixtures for end-to-end tests against the local dev cluster (real API server + node agent).

Fixtures
--------
``devcluster_kubeconfig`` (session)
    Ensures the dev cluster is up (``devcluster up``: reuses a running one; needs the
    binaries from ``devcluster build``), sets ``KUBECONFIG`` and puts the cluster's kubectl
    first on ``PATH``. Yields the kubeconfig path (``pathlib.Path``).
``k8s_api`` (session)
    A ``kubernetes.client.ApiClient`` for that kubeconfig (admin, system:masters).
``core_v1`` (session)
    ``kubernetes.client.CoreV1Api(k8s_api)``.
``namespace`` (function)
    A fresh namespace with a unique name (``e2e-<test>-<random>``), deleted afterwards.
``crds`` (session)
    Applies ``crds/*.yaml`` and waits until every CRD is Established. Yields the CRD names.
``operator_process`` (function)
    Starts the operator as a local subprocess (``.venv/bin/embedding-import-operator``)
    watching only the test's ``namespace`` (never all: tests share the cluster), after
    ``crds``. Yields a ``devcluster.testing.OperatorProcess`` (``start``/``kill``/``stop``,
    ``tail()``, ports).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devcluster import build as devcluster_build
from devcluster import cluster as devcluster_cluster
from devcluster.config import paths
from devcluster.testing import OperatorProcess, kubectl, wait_for
from eio_common import kubeapi

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def devcluster_kubeconfig() -> Path:
    if not devcluster_build.binaries_ready() and not os.environ.get("EIO_DEVCLUSTER_BUILD"):
        pytest.skip(
            "dev cluster binaries are not built: run `devcluster build` (or bash "
            "hack/ci-setup-cluster.sh), or set EIO_DEVCLUSTER_BUILD=1 to build here"
        )
    devcluster_cluster.up()
    p = paths()
    os.environ["KUBECONFIG"] = str(p.kubeconfig)
    if not os.environ.get("PATH", "").startswith(str(p.bin)):
        os.environ["PATH"] = f"{p.bin}:{os.environ.get('PATH', '')}"
    return p.kubeconfig


@pytest.fixture(scope="session")
def k8s_api(devcluster_kubeconfig: Path) -> Iterator[client.ApiClient]:
    api = kubeapi.api_client(str(devcluster_kubeconfig))
    yield api
    api.close()


@pytest.fixture(scope="session")
def core_v1(k8s_api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(k8s_api)


def _ns_name(nodeid: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", nodeid.split("::")[-1].lower()).strip("-")
    base = base.removeprefix("test-")[:40].strip("-")
    return f"e2e-{base}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, core_v1: client.CoreV1Api) -> Iterator[str]:
    name = _ns_name(request.node.nodeid)
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # pods are refused until the namespace's default ServiceAccount exists
    wait_for(
        lambda: any(
            sa.metadata.name == "default"
            for sa in core_v1.list_namespaced_service_account(name).items
        ),
        30,
        what=f"default ServiceAccount in {name}",
    )
    yield name
    try:
        core_v1.delete_namespace(name, grace_period_seconds=0)
    except client.ApiException as e:
        if e.status != 404:
            raise


@pytest.fixture(scope="session")
def crds(devcluster_kubeconfig: Path, k8s_api: client.ApiClient) -> list[str]:
    files = sorted((REPO / "crds").glob("*.yaml"))
    if not files:
        pytest.skip("no CRDs in crds/ yet")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    ext = client.ApiextensionsV1Api(k8s_api)
    import yaml

    names = []
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                names.append(doc["metadata"]["name"])

    def established(name: str) -> bool:
        crd = ext.read_custom_resource_definition(name)
        return any(
            c.type == "Established" and c.status == "True" for c in crd.status.conditions or []
        )

    for n in names:
        wait_for(lambda n=n: established(n), 30, what=f"CRD {n} Established")
    return names


def _operator_available() -> bool:
    exe = Path(sys.prefix) / "bin" / "embedding-import-operator"
    try:
        import importlib

        mod: Any = importlib.import_module("eio_operator.main")
    except Exception:
        return False
    return exe.exists() and hasattr(mod, "main")


@pytest.fixture
def operator_process(crds: list[str], namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator watching only this test's namespace: tests share one cluster, and an
    operator watching all namespaces would act on other tests' imports too."""
    if not _operator_available():
        pytest.skip(
            "the operator is not available (.venv/bin/embedding-import-operator with "
            "eio_operator.main:main)"
        )
    op = OperatorProcess(namespace, tmp_path / "operator.log")
    op.start()
    yield op
    op.stop()


def pytest_report_header(config: pytest.Config) -> list[str]:
    p = paths()
    kubectl_path = shutil.which("kubectl", path=f"{p.bin}:{os.environ.get('PATH', '')}")
    return [f"devcluster: EIO_CACHE={p.cache} kubeconfig={p.kubeconfig} kubectl={kubectl_path}"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.e2e)
