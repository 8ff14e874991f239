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
    counts as ``killed``, not an OOM;
(e) a ``mode: Continuous`` import over an embedded store, rolled at its memory threshold, read
    through its Service (``status.readService``, routed by kube-proxy) by a client pod of the
    built importer image with qdrant-client: reads are answered between rolls and after them,
    a file added to the sources is found without suspending the import, and the longest
    refusal through a roll is measured.

These run only on a cluster brought up with a kubelet (``EIO_DEVCLUSTER_NODE=kubelet``;
hack/test.sh runs this module on its own cluster with EIO_DEVCLUSTER_RUN and port base 17400).
On the node agent tier they skip.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    world_dir,
)
from kubernetes import client  # noqa: E402
from reliability_helpers import (  # noqa: E402
    create_import,
    get_import,
    importer_testlib,
    share_tree,
)
from reliability_helpers import import_manifest as continuous_manifest  # noqa: E402
from reliability_helpers import wait_phase as wait_import_phase  # noqa: E402

from devcluster import cluster as devcluster_cluster  # noqa: E402
from devcluster import node as node_mod  # noqa: E402
from devcluster.config import NODE_NAME, POD_CIDR, paths  # noqa: E402
from devcluster.testing import unless_missing, wait_for  # noqa: E402

pytest_plugins = ["flow_helpers"]
# The marks of a module that runs only on the kubelet tier (also test_rebuild_sharded.py).
KUBELET_TIER_ONLY = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        not devcluster_cluster.kubelet_mode_requested(),
        reason="kubelet tier: needs EIO_DEVCLUSTER_NODE=kubelet (hack/test.sh runs it on a "
        "cluster of its own)",
    ),
]
pytestmark = KUBELET_TIER_ONLY

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


# --------------------------------------------------------------------------------------------
# (e) reads of a Continuous import through its Service, across rolls
# --------------------------------------------------------------------------------------------
READS = "livereads"
LATE_SOURCE = "late/docs-late.jsonl"
LATE_FILLERS = 5  # with LATE_SOURCE and the appended file: 7 x 100 MB held > 450Mi
# The client: qdrant-client against the Service's cluster IP, five attempts a second, one line
# per attempt: "<unix time> ok <count> <points of LATE_SOURCE>" or "<unix time> refused|error".
READ_CLIENT = """
import sys, time
from qdrant_client import QdrantClient, models
url, collection, late = sys.argv[1:4]
client = QdrantClient(url=url, timeout=3, check_compatibility=False)
of_late = models.Filter(
    must=[models.FieldCondition(key="source", match=models.MatchValue(value=late))])
while True:
    t = time.time()
    try:
        total = client.count(collection, exact=True).count
        found = client.count(collection, count_filter=of_late, exact=True).count
        line = f"ok {total} {found}"
    except Exception as e:
        kind = "refused" if "refused" in repr(e).lower() else "error"
        line = f"{kind} {type(e).__name__}"
    print(f"{t:.3f} {line}", flush=True)
    time.sleep(max(0.0, 0.2 - (time.time() - t)))  # paces the attempts: five a second
"""
ANSWER = re.compile(r"^(\d+\.\d+) (ok (\d+) (\d+)|refused|error)\b")


@dataclass(frozen=True)
class Answer:
    at: float  # the client's clock (this machine's)
    total: int | None  # None: refused or failed
    late: int | None


def read_client_pod(
    namespace: str, url: str, script: str = READ_CLIENT, args: list[str] | None = None
) -> dict[str, Any]:
    """The read client as the chart's pods run: UID 65532, read-only root, no privileges;
    ``script`` runs with ``args`` (default: READ_CLIENT's, ``url test LATE_SOURCE``)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "read-client", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "client",
                    "image": "embedding-importer:0.1.0",
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", script],
                    "args": args if args is not None else [url, "test", LATE_SOURCE],
                    "resources": {"limits": {"memory": "512Mi"}},
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def client_lines(namespace: str, pattern: re.Pattern[str]) -> list[re.Match[str]]:
    """The read client's log lines that match ``pattern``, in order."""
    lines = kubectl("logs", "-n", namespace, "read-client", check=False).splitlines()
    return [m for line in lines if (m := pattern.match(line))]


def client_answers(namespace: str) -> list[Answer]:
    out: list[Answer] = []
    for m in client_lines(namespace, ANSWER):
        ok = m.group(3) is not None
        out.append(Answer(float(m.group(1)), int(m.group(3)) if ok else None,
                          int(m.group(4)) if ok else None))  # fmt: skip
    return out


def refusals(answers: list[Answer]) -> list[float]:
    """Each run of unanswered attempts between two answered ones: from its first attempt to
    the next answer, in seconds (what a client retrying through a roll waits)."""
    windows: list[float] = []
    since: float | None = None
    answered = False
    for a in answers:
        if a.total is not None:
            if since is not None:
                windows.append(a.at - since)
            answered, since = True, None
        elif answered and since is None:
            since = a.at
    return windows


def threshold_rolls(api: client.ApiClient, namespace: str) -> int:
    st = get_import(api, namespace, READS).get("status") or {}
    return int((st.get("restarts") or {}).get("threshold", 0))


def read_service_ip(
    core: client.CoreV1Api, api: client.ApiClient, namespace: str, name: str = READS
) -> str:
    """The cluster IP of the Service the operator names in import ``name``'s
    status.readService."""

    def named() -> str | None:
        st = get_import(api, namespace, name).get("status") or {}
        return st.get("readService")

    svc = wait_for(named, 120, "status.readService")
    assert svc == f"{name}-reads", svc

    def service_ip() -> str | None:  # status may name it a moment before it is created
        return unless_missing(
            lambda: str(core.read_namespaced_service(svc, namespace).spec.cluster_ip)
        )

    ip = str(wait_for(service_ip, 60, f"Service {svc}"))
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.0.0.0/24"), ip
    return ip


def store_for_pods(base: Path) -> Path:
    """``base/qdrant``, writable by the importer pods (UID 65532); made after
    ``share_tree(base)``, which would take that away."""
    qdrant = base / "qdrant"
    qdrant.mkdir(mode=0o777)
    qdrant.chmod(0o777)
    return qdrant


def continuous_import(namespace: str, src: Path, qdrant: Path) -> dict[str, Any]:
    """Follow ``src`` (poll 2 s); the test hook holds 100 MB per file, so at a 450Mi threshold
    the importer exits 75 every few files and the operator rolls it (as
    test_continuous_import.py does on the node agent)."""
    doc = continuous_manifest(READS, namespace, src, qdrant, **{
        "mode": "Continuous",
        "sources.pollIntervalSeconds": 2,
        "importer.env": [{"name": "IMPORTER_FAULT_HOLD_MB_PER_FILE", "value": "100"}],
        "memoryPolicy.threshold": "450Mi",
        "memoryPolicy.retryBudget": 20,
        "memoryPolicy.keepTerminatedPods": 100,
    })  # fmt: skip
    doc["spec"]["importer"].pop("metricsPort")  # own network namespaces: the default is fine
    return doc


def test_continuous_import_is_read_through_its_service_across_rolls(
    namespace: str,
    namespaced_operator: NamespacedOperator,
    core_v1: client.CoreV1Api,
    k8s_api: client.ApiClient,
) -> None:
    lib = importer_testlib()
    base = world_dir("eio-kubelet-reads-")
    src = lib.make_corpus(base / "data", seed=1010, conversations=4, turns=12, jsonl_files=2,
                          records=10, markdown=1, broken=False)  # fmt: skip
    extra = lib.make_corpus(base / "extra", seed=2020, conversations=1, turns=8,
                            jsonl_files=1 + LATE_FILLERS, records=6, markdown=0,
                            broken=False)  # fmt: skip
    share_tree(base)
    qdrant = store_for_pods(base)
    try:
        t0 = time.monotonic()
        create_import(k8s_api, continuous_import(namespace, src, qdrant))
        ip = read_service_ip(core_v1, k8s_api, namespace)
        apply(read_client_pod(namespace, f"http://{ip}:6333"))

        def diagnose() -> str:
            pods = kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False)
            return f"{pods}\n--- operator log ---\n{namespaced_operator.tail(40)}"

        wait_for(lambda: any(a.total is not None for a in client_answers(namespace)), 600,
                 "a read answered through the Service", interval=2, diagnose=diagnose)  # fmt: skip
        wait_import_phase(k8s_api, namespace, READS, ("Synced",), 900, diagnose)
        before = max(a.total or 0 for a in client_answers(namespace))
        rolls_before = threshold_rolls(k8s_api, namespace)
        # while it follows and is read: a line appended to a file and new files in a new
        # directory; 100 MB held per file at a 450Mi threshold, so they roll it at least once
        # now, while the client reads (the rolls of the first import may all have happened
        # before the client's first answer)
        with (src / "docs-0.jsonl").open("a") as f:
            f.write((extra / "docs-0.jsonl").read_text().splitlines()[0] + "\n")
        (src / "late").mkdir(mode=0o755)
        (src / LATE_SOURCE).write_text((extra / "docs-0.jsonl").read_text())
        for i in range(LATE_FILLERS):
            (src / "late" / f"more-{i}.jsonl").write_text(
                (extra / f"docs-{i + 1}.jsonl").read_text()
            )
        share_tree(src)
        found = wait_for(lambda: [a for a in client_answers(namespace) if a.late], 600,
                         f"{LATE_SOURCE} found through the Service", interval=2,
                         diagnose=diagnose)  # fmt: skip
        wait_for(lambda: threshold_rolls(k8s_api, namespace) > rolls_before
                 and refusals(client_answers(namespace)), 600,
                 "a roll while read, answered after", interval=2, diagnose=diagnose)  # fmt: skip
        st = get_import(k8s_api, namespace, READS)["status"]
        assert st["phase"] in ("Synced", "CatchingUp", "Running"), st  # following, never suspended
        answers = client_answers(namespace)
        assert_reads_across_rolls(answers, found[0], before, st, time.monotonic() - t0)
        assert_ran_under_the_kubelet(core_v1, namespace, f"eio.dev/import={READS}")
    finally:
        kubectl("delete", "pod", "read-client", "-n", namespace, "--grace-period=0",
                "--wait=false", check=False)  # fmt: skip
        kubectl("delete", "ei", READS, "-n", namespace, "--wait=true", "--timeout=120s",
                check=False)  # fmt: skip


def assert_reads_across_rolls(
    answers: list[Answer], found: Answer, before: int, st: dict[str, Any], seconds: float
) -> None:
    """Rolled at least once while read; answered after each roll; the new file found with a
    count above the one before the change; print the longest refusal through a roll."""
    restarts = st["restarts"]
    windows = refusals(answers)
    answered = [a for a in answers if a.total is not None]
    detail = (f"restarts {json.dumps(restarts)}; {len(answered)} of {len(answers)} answered; "
              f"refusal windows {[round(w, 1) for w in windows]}")  # fmt: skip
    assert restarts["threshold"] >= 1, detail
    for cause in ("oomKilled", "crash", "killed", "stalled", "overThreshold"):
        assert restarts.get(cause, 0) == 0, detail
    assert windows, "no roll was seen through the Service, or none was answered after: " + detail
    assert found.total is not None, found
    assert found.total > before, (found, before, detail)
    assert max(a.total or 0 for a in answered) > before, detail
    print(f"\nreads through {READS}-reads (kube-proxy) over {seconds:.0f}s: {detail}; "
          f"longest refusal through a roll {max(windows):.1f}s; {LATE_SOURCE} found with "
          f"{found.late} points, count {before} -> {found.total}")  # fmt: skip
