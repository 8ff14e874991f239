"""Dev-cluster plumbing shared by the cluster benchmarks (roll_latency, operator_scale).

Needs the local cluster (``devcluster up``) and the operator package. The bench starts its own
operator process watching only its own namespace, so other operators or tests running at the
same time do not mix with its measurements.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common as c
import yaml

from devcluster.testing import free_port, wait_for  # one wait helper for the tests and benches


@dataclass
class Cluster:
    kubeconfig: Path
    kubectl: Path


def cluster() -> Cluster | None:
    """The running dev cluster, or None when it is not up (``devcluster status`` fails)."""
    try:
        from devcluster.config import paths
    except ImportError:
        return None
    st = subprocess.run(
        [str(Path(c.PYTHON).parent / "devcluster"), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    if st.returncode != 0:
        return None
    p = paths()
    os.environ["KUBECONFIG"] = str(p.kubeconfig)
    return Cluster(p.kubeconfig, p.bin / "kubectl")


def kubectl(cl: Cluster, *args: str, stdin: str | None = None, check: bool = True) -> str:
    out = subprocess.run(
        [str(cl.kubectl), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if check and out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr}{out.stdout}")
    return out.stdout


def apply(cl: Cluster, docs: list[dict[str, Any]]) -> None:
    kubectl(cl, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))


def apply_crds(cl: Cluster) -> None:
    kubectl(cl, "apply", "--server-side", "--force-conflicts", "-f", str(c.ROOT / "crds"))
    kubectl(
        cl, "wait", "--for=condition=Established", "--timeout=60s", "crd/embeddingimports.eio.dev"
    )


def new_namespace(cl: Cluster, prefix: str) -> str:
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kubectl(cl, "create", "namespace", ns)
    wait_for(
        lambda: "default" in kubectl(cl, "get", "sa", "-n", ns, "-o", "name", check=False),
        60,
        "default ServiceAccount",
    )
    return ns


def bench_namespace(cl: Cluster, prefix: str) -> tuple[str, Path]:
    """The CRDs applied, a fresh namespace ``<prefix>-xxxxxx`` and a work directory for it."""
    apply_crds(cl)
    ns = new_namespace(cl, prefix)
    return ns, Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp"))


def delete_namespace(cl: Cluster, ns: str) -> None:
    kubectl(cl, "delete", "namespace", ns, "--wait=false", check=False)


@dataclass
class Operator:
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def rss(self) -> int:
        return c.process_tree_rss(self.proc.pid)


def start_operator(cl: Cluster, namespace: str, log: Path, resync: float = 2.0) -> Operator:
    cmd = [c.PYTHON, "-m", "eio_operator.main"]  # the real operator
    metrics, liveness = free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(cl.kubeconfig),
        "EIO_WATCH_NAMESPACE": namespace,
        "EIO_METRICS_PORT": str(metrics),
        "EIO_LIVENESS_PORT": str(liveness),
        "EIO_RESYNC_INTERVAL_SECONDS": str(resync),
        "PYTHONUNBUFFERED": "1",
    }
    fh = log.open("wb")
    proc = subprocess.Popen(
        cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=c.ROOT, start_new_session=True
    )
    fh.close()

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"operator exited {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", liveness)) == 0

    wait_for(up, 90, "operator liveness port")
    return Operator(proc, log, metrics)


def metrics_text(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def get_json(cl: Cluster, *args: str) -> dict[str, Any]:
    return json.loads(kubectl(cl, "get", *args, "-o", "json"))


def teardown(cl: Cluster, ns: str, op: Operator | None) -> None:
    """Delete the bench's imports while its operator still runs (it removes its finalizer),
    then stop the operator and delete the namespace. Finalizers left over (operator gone) are
    removed, so the namespace never hangs in Terminating."""
    kubectl(
        cl,
        "delete",
        "embeddingimports",
        "--all",
        "-n",
        ns,
        "--wait=true",
        "--timeout=120s",
        check=False,
    )
    if op:
        op.stop()
    for name in kubectl(cl, "get", "embeddingimports", "-n", ns, "-o", "name", check=False).split():
        kubectl(
            cl,
            "patch",
            "-n",
            ns,
            name,
            "--type",
            "merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
    delete_namespace(cl, ns)
