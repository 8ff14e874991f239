"""The closed loop under a kubelet nobody here wrote: kubelet v1.36 + containerd 2 + runc, pods
from the images hack/build-images.sh built from the Dockerfiles (devcluster/node.py).

(a) ``helm install`` of the chart with the built operator image -> the operator pod runs under
    the kubelet -> an EmbeddingImport reaches Succeeded with importer pods from the built
    importer image, exactly the standalone reference's points -> ``helm uninstall`` leaves
    no pods;
(b) the importer OOM-killed by the kernel in a container's memory cgroup: the kubelet reports
    ``OOMKilled``, the operator rolls the pod, and the final points equal an uninterrupted
    run's;
(c) the importer's memory threshold (exit 75) read from the container's cgroup under runc
    ((b) and (c): the scenarios of test_import_flow.py, flow_helpers.MEMORY_SCENARIOS);
(d) the importer SIGKILLed from outside: the kubelet reports 137 with reason ``Error``, which
    counts as ``killed``, not an OOM.

These run only on a cluster brought up with a kubelet (``EIO_DEVCLUSTER_NODE=kubelet``;
hack/test.sh runs this module on its own cluster with EIO_DEVCLUSTER_RUN and port base 17400).
On the node agent tier they skip.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

pytest.register_assert_rewrite("flow_helpers")

from flow_helpers import (  # noqa: E402
    MEMORY_SCENARIOS,
    Corpus,
    MemoryScenario,
    NamespacedOperator,
    PodWatch,
    apply,
    assert_same_points,
    checkpoints,
    fmt_pods,
    import_manifest,
    kubectl,
    run_memory_scenario,
    terminations,
    wait_phase,
)
from kubernetes import client  # noqa: E402

from devcluster import cluster as devcluster_cluster  # noqa: E402
from devcluster import node as node_mod  # noqa: E402
from devcluster.config import NODE_NAME, POD_CIDR, paths  # noqa: E402
from devcluster.testing import wait_for  # noqa: E402

pytest_plugins = ["flow_helpers"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        not devcluster_cluster.kubelet_mode_requested(),
        reason="kubelet tier: needs EIO_DEVCLUSTER_NODE=kubelet (hack/test.sh runs it on a "
        "cluster of its own)",
    ),
]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "embedding-import-operator"
IMPORTER_PODS = "app.kubernetes.io/name=embedding-importer"


def assert_ran_under_the_kubelet(core: client.CoreV1Api, namespace: str, selector: str) -> int:
    """Every pod matching ``selector`` ran in containerd, with an address of the pod network."""
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    assert pods, f"no pods {selector} in {namespace}"
    node = core.read_node(NODE_NAME)
    assert node.metadata.labels.get("eio.dev/node") == "kubelet", node.metadata.labels
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    for pod in pods:
        ids = [cs.container_id for cs in pod.status.container_statuses or []]
        assert ids, pod.metadata.name
        assert all(i and i.startswith("containerd://") for i in ids), (pod.metadata.name, ids)
        if pod.status.pod_ip:
            assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(POD_CIDR)
    return len(pods)


class OperatorPodLogs:
    """What wait_phase needs of an operator (its log) for an operator running in a pod."""

    def __init__(self, namespace: str, selector: str) -> None:
        self.namespace, self.selector = namespace, selector

    def log_tail(self, lines: int = 80) -> str:
        return kubectl("logs", "-n", self.namespace, "-l", self.selector, f"--tail={lines}",
                       check=False)  # fmt: skip


def helm_bin() -> str:
    helm = os.environ.get("HELM") or str(paths().bin / "helm")
    if not Path(helm).is_file():
        pytest.skip("helm CLI not built: run hack/build-helm.sh")
    return helm


def run_helm(*args: str) -> str:
    proc = subprocess.run([helm_bin(), *args], capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}"
    return proc.stdout


def test_helm_install_with_the_built_images_imports_under_the_kubelet(
    crds: list[str],
    namespace: str,
    core_v1: client.CoreV1Api,
    pod_watch: PodWatch,
    flow_corpus: Corpus,
    qdrant_dir: Path,
) -> None:
    release = f"eio-{uuid.uuid4().hex[:6]}"
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
    t0 = time.monotonic()
    run_helm(
        "install", release, str(CHART), "--namespace", namespace,
        "--set", "scope=namespace",
        "--set", "crds.install=false",  # the `crds` fixture owns the CRD in this session
        "--set", "image.pullPolicy=Never",  # imported into containerd, no registry here
        "--wait", "--timeout", "5m",
    )  # fmt: skip
    installed = time.monotonic() - t0
    try:
        n = assert_ran_under_the_kubelet(core_v1, namespace, selector)
        assert n == 1
        # helm --wait returned: the operator pod is Ready (kopf's liveness endpoint answers).
        # It reaches the API server only through the Service IP (DNAT on the pod bridge).
        op = OperatorPodLogs(namespace, selector)
        doc = import_manifest("viahelm", namespace, flow_corpus.root, qdrant_dir,
                              policy={"recycleEveryFiles": 10})  # fmt: skip
        doc["spec"]["importer"].pop("metricsPort")  # own network namespaces: the default is fine
        apply(doc)
        st = wait_phase("viahelm", namespace, op)  # type: ignore[arg-type]
        pods = pod_watch.settled()
        ends = terminations(pods)
        want = [(75, "Error"), (75, "Error"), (0, "Completed")]  # a roll every 10 of 24 files
        assert [e[2:] for e in ends] == want, fmt_pods(pods)
        assert_ran_under_the_kubelet(core_v1, namespace, IMPORTER_PODS)
        assert_same_points(flow_corpus, qdrant_dir, st, checkpoints("viahelm", namespace, 1))
        kubectl("delete", "ei", "viahelm", "-n", namespace, "--wait=true", "--timeout=120s")
    finally:
        run_helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "3m")
    wait_for(
        lambda: not core_v1.list_namespaced_pod(namespace, label_selector=selector).items,
        120,
        "operator pods gone after helm uninstall",
    )
    print(f"\nhelm install --wait {installed:.0f}s; import + uninstall "
          f"{time.monotonic() - t0:.0f}s in all")  # fmt: skip


@pytest.mark.parametrize("scenario", MEMORY_SCENARIOS)
def test_memory_rolls_under_the_kubelet(
    scenario: MemoryScenario,
    namespace: str,
    namespaced_operator: NamespacedOperator,
    pod_watch: PodWatch,
    flow_corpus: Corpus,
    qdrant_dir: Path,
    core_v1: client.CoreV1Api,
) -> None:
    """(b) the kernel OOM-kills the importer at the container's memory cgroup limit set by
    runc: the kubelet reports ``OOMKilled`` (not what a node agent computed); (c) the
    importer's own watchdog reads its memory where runc puts it (the container's memory
    cgroup, as containerd mounts it) and exits 75 at 500Mi of a 1Gi limit. Same scenario
    and checks as test_import_flow.py (flow_helpers.MEMORY_SCENARIOS)."""
    run = run_memory_scenario(
        scenario, namespace, namespaced_operator, pod_watch, flow_corpus, qdrant_dir, core_v1
    )
    assert_ran_under_the_kubelet(core_v1, namespace, IMPORTER_PODS)
    print(f"\n{scenario.name} rolls under the kubelet: {len(run.rolled)}; pods:\n"
          f"{fmt_pods(run.pods)}")  # fmt: skip


def test_external_sigkill_under_the_kubelet_is_a_crash_not_an_oom(
    namespace: str,
    namespaced_operator: NamespacedOperator,
    pod_watch: PodWatch,
    flow_corpus: Corpus,
    qdrant_dir: Path,
    core_v1: client.CoreV1Api,
) -> None:
    """A SIGKILL from outside (not the OOM killer): the kubelet reports exit 137 with reason
    ``Error``. That is the kubelet's truth the roll decision must read: killed, not an OOM."""
    apply(import_manifest("killed", namespace, flow_corpus.root, qdrant_dir, batch_size=8))

    def running_container() -> str | None:
        try:
            pod = core_v1.read_namespaced_pod("killed-s0-a1", namespace)
        except client.ApiException:
            return None
        for cs in pod.status.container_statuses or []:
            if cs.state.running and cs.container_id:
                return str(cs.container_id).removeprefix("containerd://")
        return None

    cid = wait_for(running_container, 180, "killed-s0-a1 running")
    p = paths()
    np = node_mod.node_paths(p)
    tasks = node_mod.ctr(p, np, "tasks", "ls").stdout.splitlines()
    pid = next(int(line.split()[1]) for line in tasks if line.startswith(cid))
    os.kill(pid, signal.SIGKILL)  # the container's main process, from the host

    st = wait_phase("killed", namespace, namespaced_operator)
    pods = pod_watch.settled()
    ends = terminations(pods)
    detail = f"{json.dumps(st['restarts'])}\n{fmt_pods(pods)}"
    assert [e[2:] for e in ends] == [(137, "Error"), (0, "Completed")], detail
    assert_same_points(flow_corpus, qdrant_dir, st, checkpoints("killed", namespace, 1))
    # the roll decision's own cause for it: "killed" (docs/architecture.md), never an OOM
    assert st["restarts"]["killed"] == st["restarts"]["total"] == 1, detail
    assert st["restarts"]["oomKilled"] == 0, detail
