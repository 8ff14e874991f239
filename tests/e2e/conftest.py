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
``operator_process`` (session)
    Starts the operator as a local subprocess (``.venv/bin/embedding-import-operator``,
    watching all namespaces) after ``crds``; skips with a clear reason while the operator does
    not exist yet. Yields an ``OperatorProcess`` (``.proc``, ``.log_path``, ``.metrics_port``,
    ``.liveness_port``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes import config as k8s_config

from devcluster import build as devcluster_build
from devcluster import cluster as devcluster_cluster
from devcluster.config import paths
from devcluster.testing import wait_for

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
    api = k8s_config.new_client_from_config(config_file=str(devcluster_kubeconfig))
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


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    """Run the dev cluster's kubectl (first on PATH once the cluster fixture ran)."""
    exe = str(paths().bin / "kubectl")
    out = subprocess.run(
        [exe, *args], input=input, capture_output=True, text=True, check=False, timeout=120
    )
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr}{out.stdout}")
    return out.stdout


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    liveness_port: int

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return ""


def _operator_command() -> list[str] | None:
    exe = Path(sys.prefix) / "bin" / "embedding-import-operator"
    if not exe.exists():
        return None
    try:
        import importlib

        mod: Any = importlib.import_module("eio_operator.main")
    except Exception:
        return None
    if not hasattr(mod, "main"):
        return None
    return [str(exe)]


@pytest.fixture(scope="session")
def operator_process(
    devcluster_kubeconfig: Path, crds: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    cmd = _operator_command()
    if cmd is None:
        pytest.skip(
            "the operator is not available yet (.venv/bin/embedding-import-operator with "
            "eio_operator.main:main)"
        )
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    metrics, liveness = _free_port(), _free_port()
    env = dict(os.environ)
    env.update(
        KUBECONFIG=str(devcluster_kubeconfig),
        EIO_WATCH_NAMESPACE=os.environ.get("EIO_WATCH_NAMESPACE", ""),
        EIO_METRICS_PORT=str(metrics),
        EIO_LIVENESS_PORT=str(liveness),
        EIO_BACKSTOP_INTERVAL_SECONDS=os.environ.get("EIO_BACKSTOP_INTERVAL_SECONDS", "2"),
        PYTHONUNBUFFERED="1",
    )
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )
    op = OperatorProcess(proc, log_path, metrics, liveness)

    def alive_and_listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"operator exited with {proc.returncode}:\n{op.log_tail()}")
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", liveness)) == 0

    try:
        wait_for(alive_and_listening, 60, what="operator liveness port")
    except TimeoutError:
        # some operators do not open the liveness port: accept a process that stays up
        if proc.poll() is not None:
            raise
    yield op
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def pytest_report_header(config: pytest.Config) -> list[str]:
    p = paths()
    kubectl_path = shutil.which("kubectl", path=f"{p.bin}:{os.environ.get('PATH', '')}")
    return [f"devcluster: EIO_CACHE={p.cache} kubeconfig={p.kubeconfig} kubectl={kubectl_path}"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.e2e)
