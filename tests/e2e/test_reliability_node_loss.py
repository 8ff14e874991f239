"""Node failures on a dev cluster of several node agents (``devcluster up --nodes 2``).

Skipped on a one-node cluster (the default). Run against a two-node one::

    export EIO_DEVCLUSTER_PORT_BASE=17800 EIO_DEVCLUSTER_RUN=$HOME/.cache/eio-devcluster/nodes-run
    .venv/bin/devcluster up --nodes 2
    .venv/bin/pytest -m reliability tests/e2e/test_reliability_node_loss.py

* node lost mid-import (``devcluster node lose``: agent and pods killed), store a Qdrant server:
  the node turns Unknown (20 s), the operator force-deletes the pod after
  ``memoryPolicy.nodeLostSeconds``, and the shard finishes on the other node with the points
  of an uninterrupted run; counted as an eviction.
* node drained (``kubectl drain``, the eviction API): the pod resumes on the other node,
  counted in ``status.restarts.evicted``.
* preempted by the scheduler (a pod of a higher PriorityClass that fits on the importer's node
  only without it): the scheduler marks the importer pod DisruptionTarget/PreemptionByScheduler
  and deletes it with its grace period; the importer checkpoints on SIGTERM and exits 75, and
  the shard resumes on the other node, counted in ``status.restarts.evicted``.
* a PodDisruptionBudget (``spec.importer.podDisruptionBudget.maxUnavailable: 0``): ``kubectl
  drain --timeout=20s`` of the importer's node fails with the disruption-budget message while
  the import runs (the pod runs on, untouched); once the import has finished, it succeeds.
* node partitioned (``devcluster node partition``: the agent stops, the pod keeps running),
  embedded store on a hostPath: the operator does not force-delete (the store is tied to the
  node), says so in condition NodeLost/StoreOnLostNode and an event; once the node is back,
  its agent kills the zombie and the import finishes with the reference points.
* the zombie race (``devcluster node partition``, store a Qdrant server): the operator
  force-deletes the pod after ``nodeLostSeconds`` and starts attempt M on the other node while
  the old process still runs and reaches the API server and the store. The operator raised the
  fence first, so the zombie's next fence check (at most 1 s before each batch of writes, and
  in every checkpoint save) stops it: it logs "attempt N superseded by attempt M; stopping
  without writing (exit 79)" and ends; the ConfigMap's checkpoint never goes back; the points
  equal those of an uninterrupted run.

The server is ``tests/reliability/qdrant_shim.py`` on a local port (real HTTP, qdrant-client's
models, storage in qdrant-client's local mode -- not a real Qdrant): all node agents run on
this machine and pods share its network, so it is reachable from every node, as a real server
is. A hostPath is visible on every node here too, which a real cluster does not give: the
operator still treats an embedded store as tied to its node (it cannot know a path is shared).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from reliability_helpers import (
    PodWatcher,
    create_import,
    events_of,
    get_import,
    import_manifest,
    importer_pid,
    importer_testlib,
    operator,
    qdrant_shim,
    share_tree,
    shared_dir,
    wait_phase,
)

from devcluster import nodeops
from devcluster.config import paths
from devcluster.nodeagent import logs, orphans
from devcluster.testing import free_port, kubectl, wait_for
from eio_common import contract, quantity

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

lib = importer_testlib()
CORPUS = {"seed": 23, "conversations": 4, "turns": 16, "jsonl_files": 2, "records": 12,
          "markdown": 2}  # fmt: skip
MONITOR_GRACE = 20  # kube-controller-manager --node-monitor-grace-period of a multi-node cluster
NODE_LOST_SECONDS = 10
LABEL = "eio.dev/import"


def _ready_nodes(core: client.CoreV1Api) -> list[str]:
    out = []
    for n in core.list_node().items:
        ready = next((c for c in n.status.conditions or [] if c.type == "Ready"), None)
        taints = [t.key for t in n.spec.taints or []]
        healthy = ready is not None and ready.status == "True"
        if healthy and not n.spec.unschedulable and "node.kubernetes.io/unreachable" not in taints:
            out.append(n.metadata.name)
    return out


@pytest.fixture
def two_nodes(core_v1: client.CoreV1Api) -> list[str]:
    nodes = _ready_nodes(core_v1)
    if len(nodes) < 2:
        why = (
            f"needs a dev cluster of 2+ Ready nodes (has {nodes}): `devcluster up --nodes 2` "
            "with its own EIO_DEVCLUSTER_RUN and EIO_DEVCLUSTER_PORT_BASE"
        )
        if os.environ.get("EIO_REQUIRE_NODES"):  # hack/test.sh's two-node stage: must run
            pytest.fail(why)
        pytest.skip(why)
    return nodes


@pytest.fixture
def shim(tmp_path: Path) -> Iterator[Any]:
    server = qdrant_shim().QdrantShim(free_port(), tmp_path / "server-storage")
    server.start()
    try:
        yield server
    finally:
        server.close()


def _src(tmp_path: Path, **corpus: int) -> Path:
    src = lib.make_corpus(shared_dir(tmp_path / "data"), **{**CORPUS, **corpus})
    share_tree(src)
    return src


def _spec(**extra: Any) -> dict[str, Any]:
    return {
        "embedding.batchSize": 4,
        "memoryPolicy.nodeLostSeconds": NODE_LOST_SECONDS,
        "importer.env": [
            {"name": "IMPORTER_SORT_WINDOW", "value": "1"},
            {"name": "IMPORTER_CHECKPOINT_INTERVAL", "value": "0.5"},
        ],
        **extra,
    }


def _live_pod(core: client.CoreV1Api, ns: str, name: str) -> Any:
    pods = core.list_namespaced_pod(ns, label_selector=f"{LABEL}={name}").items
    live = [p for p in pods if p.status.phase in ("Pending", "Running") and p.spec.node_name]
    return live[-1] if len(live) == 1 else None


def _running_on(core: client.CoreV1Api, ns: str, name: str, not_on: str = "") -> Any:
    def found() -> Any:
        pod = _live_pod(core, ns, name)
        ok = pod is not None and pod.status.phase == "Running" and pod.spec.node_name != not_on
        return pod if ok else None

    return found


def _reference(tmp_path: Path, src: Path) -> dict[str, Any]:
    ref = lib.Workspace(tmp_path / "ref", src)
    r = ref.run("--batch-size", "4", "--threads", "1")
    assert r.returncode == 0, r.stderr
    points: dict[str, Any] = ref.points()
    return points


def _node_lost_condition(api: client.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    for c in (get_import(api, ns, name).get("status") or {}).get("conditions") or []:
        if c["type"] == "NodeLost" and c["status"] == "True":
            return dict(c)
    return None


def _node_lost_events(namespace: str) -> list[str]:
    return [e["message"] for e in events_of(namespace) if e["reason"] == "NodeLost"]


def test_node_lost_mid_import_finishes_on_the_other_node(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    two_nodes: list[str],
    shim: Any,
) -> None:
    src = _src(tmp_path)
    watcher = PodWatcher(k8s_api, namespace).start()
    lost = ""
    try:
        with operator(namespace, tmp_path / "operator.log") as op:
            doc = import_manifest("lose", namespace, src, None, **_spec(**{"qdrant.url": shim.url}))
            create_import(k8s_api, doc)
            first = wait_for(_running_on(core_v1, namespace, "lose"), 240, "the first pod")
            wait_for(lambda: shim.upserted >= 10, 300, "points in the server", 0.2)
            lost = first.spec.node_name
            assert get_import(k8s_api, namespace, "lose")["status"]["phase"] == "Running"
            nodeops.lose(lost)
            t_lost = time.monotonic()
            # NodeLost=True/ForceDeleted lasts one reconcile (the pod is gone at once, and
            # the condition turns False/NodesHealthy): the event stays
            seen = wait_for(
                lambda: _node_lost_events(namespace),
                MONITOR_GRACE + NODE_LOST_SECONDS + 60,
                "a NodeLost event",
                interval=0.5,
            )
            second = wait_for(
                _running_on(core_v1, namespace, "lose", not_on=lost),
                MONITOR_GRACE + NODE_LOST_SECONDS + 60,
                "the shard running on another node",
            )
            moved_after = time.monotonic() - t_lost
            st = wait_phase(k8s_api, namespace, "lose", ("Succeeded",), 600, op.tail)
    finally:
        watcher.stop()
        if lost:
            nodeops.restore(lost)
    assert len(seen) == 1, seen
    assert f"node {lost} lost since" in seen[0], seen
    assert "force-deleting" in seen[0], seen
    cond = next(c for c in st["conditions"] if c["type"] == "NodeLost")
    assert (cond["status"], cond["reason"]) == ("False", "NodesHealthy"), cond
    assert second.spec.node_name != lost
    assert st["restarts"]["evicted"] >= 1, st["restarts"]
    assert moved_after <= MONITOR_GRACE + NODE_LOST_SECONDS + 60
    points = shim.points("test")
    lib.assert_same_points(points, _reference(tmp_path, src))
    print(
        f"node {lost} lost mid-import ({shim.upserted} upserts by the end): shard running on "
        f"{second.spec.node_name} {moved_after:.0f}s later; restarts {st['restarts']}; "
        f"{len(points)} points == reference"
    )


def test_drained_node_resumes_elsewhere_counted_as_an_eviction(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    two_nodes: list[str],
    shim: Any,
) -> None:
    src = _src(tmp_path)
    drained = ""
    try:
        with operator(namespace, tmp_path / "operator.log") as op:
            doc = import_manifest("drain", namespace, src, None,
                                  **_spec(**{"qdrant.url": shim.url}))  # fmt: skip
            create_import(k8s_api, doc)
            first = wait_for(_running_on(core_v1, namespace, "drain"), 240, "the first pod")
            wait_for(lambda: shim.upserted >= 10, 300, "points in the server", 0.2)
            drained = first.spec.node_name
            # the eviction API; --delete-emptydir-data: the importer's /tmp is an emptyDir
            out = kubectl("drain", drained, f"--pod-selector={LABEL}=drain", "--ignore-daemonsets",
                          "--delete-emptydir-data", "--timeout=120s")  # fmt: skip
            second = wait_for(
                _running_on(core_v1, namespace, "drain", not_on=drained), 120, "pod elsewhere"
            )
            st = wait_phase(k8s_api, namespace, "drain", ("Succeeded",), 600, op.tail)
    finally:
        if drained:
            kubectl("uncordon", drained)
    assert "evicting pod" in out, out
    assert second.spec.node_name != drained
    assert st["restarts"]["evicted"] >= 1, st["restarts"]
    assert st["restarts"]["total"] == st["restarts"]["evicted"], st["restarts"]
    points = shim.points("test")
    lib.assert_same_points(points, _reference(tmp_path, src))
    print(
        f"node {drained} drained: shard resumed on {second.spec.node_name}; restarts "
        f"{st['restarts']}; {len(points)} points == reference"
    )


def test_partitioned_node_with_an_embedded_store_waits_then_finishes(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    two_nodes: list[str],
) -> None:
    # larger: the importer must still run when the node comes back ~35 s later, also on an
    # idle machine (10 conversations ended within that window once; 24 conversations, 769
    # points at 33 chunks/s, ended 24 s after the partition once)
    src = _src(tmp_path, conversations=60, turns=24)
    q = shared_dir(tmp_path / "qdrant")
    cut = ""
    with operator(namespace, tmp_path / "operator.log") as op:
        create_import(k8s_api, import_manifest("part", namespace, src, q, **_spec()))
        first = wait_for(_running_on(core_v1, namespace, "part"), 240, "the first pod")
        wait_for(
            lambda: ((get_import(k8s_api, namespace, "part").get("status") or {})
                     .get("counts") or {}).get("chunks", 0) > 0,
            300, "some progress", 0.2,
        )  # fmt: skip
        cut = first.spec.node_name
        try:
            nodeops.partition(cut)
            waiting = wait_for(
                lambda: _node_lost_condition(k8s_api, namespace, "part"),
                MONITOR_GRACE + NODE_LOST_SECONDS + 60,
                "condition NodeLost (StoreOnLostNode)",
                interval=0.5,
            )
            pod = core_v1.read_namespaced_pod(first.metadata.name, namespace)
            zombie = orphans.alive(paths().node_pods(cut)).get(first.metadata.uid, [])
        finally:
            nodeops.restore(cut)
        left = orphans.alive(paths().node_pods(cut)).get(first.metadata.uid, [])
        st = wait_phase(k8s_api, namespace, "part", ("Succeeded",), 600, op.tail)
    assert waiting["reason"] == "StoreOnLostNode", waiting
    assert cut in waiting["message"], waiting
    assert pod.metadata.deletion_timestamp is None  # not force-deleted: the store is there
    assert zombie, "the importer ended while its node was partitioned: use a larger corpus"
    assert left == [], left  # the restored agent killed the zombie before anything else
    assert st["restarts"]["killed"] == 1, st["restarts"]  # its container: exit 137, Unknown
    events = [e for e in events_of(namespace) if e["reason"] == "NodeLost"]
    assert events, events_of(namespace)
    assert cut in events[0]["message"]
    ref = lib.Workspace(tmp_path / "ref", src)
    r = ref.run("--batch-size", "4", "--threads", "1")
    assert r.returncode == 0, r.stderr
    lib.assert_same_points(lib.read_points(q), ref.points())
    print(
        f"node {cut} partitioned: NodeLost/StoreOnLostNode ({waiting['message'][:160]}); zombie "
        f"pids {zombie} killed at restore; restarts {st['restarts']}; "
        f"{st['counts']['points']} points == reference"
    )


class CheckpointSampler:
    """Reads a shard's checkpoint ConfigMap every 0.2 s in a thread: (fence, attempt, counters)
    per sample, to show that nothing ever goes back while two attempts run."""

    COUNTERS = ("files", "records", "chunks", "points", "deleted")

    def __init__(self, core: client.CoreV1Api, namespace: str, name: str) -> None:
        self.core, self.namespace, self.name = core, namespace, name
        self.samples: list[tuple[int, int, tuple[int, ...]]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> CheckpointSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                cm = self.core.read_namespaced_config_map(self.name, self.namespace)
            except Exception as e:  # an API hiccup: the next sample
                self.errors.append(f"{type(e).__name__}: {str(e)[:120]}")
                continue
            text = (cm.data or {}).get(contract.CHECKPOINT_KEY)
            if not text:
                continue
            cp = json.loads(text)
            fence = contract.fence_of(cm.metadata.annotations) or 0
            counters = tuple(int(cp["counters"].get(k, 0)) for k in self.COUNTERS)
            self.samples.append((fence, int(cp["attempt"]), counters))

    def regressions(self) -> list[str]:
        out = []
        for prev, cur in zip(self.samples, self.samples[1:], strict=False):
            if cur[0] < prev[0] or cur[1] < prev[1]:
                out.append(f"fence/attempt went back: {prev[:2]} -> {cur[:2]}")
            out += [
                f"{k} went back: {a} -> {b}"
                for k, a, b in zip(self.COUNTERS, prev[2], cur[2], strict=True)
                if b < a
            ]
        return out


def _container_log(namespace: str, pod: Any) -> Path:
    d = logs.pod_log_dir(paths().logs, namespace, pod.metadata.name, pod.metadata.uid)
    return logs.container_log(d, pod.spec.containers[0].name, 0)


def _gone(pid: int, start: str | None) -> bool:
    return start is None or orphans.start_time(pid) != start


def test_zombie_on_a_partitioned_node_is_fenced_off(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    two_nodes: list[str],
    shim: Any,
) -> None:
    # large enough that the importer still runs ~35 s after the partition (grace + nodeLost)
    # also on an idle machine (~33 chunks/s there: 40 conversations, 1210 points, is ~37 s)
    src = _src(tmp_path, conversations=64, turns=24)
    cm_name = contract.checkpoint_configmap_name("zombie", 0)
    cut, pid, start = "", 0, None
    with operator(namespace, tmp_path / "operator.log") as op:
        doc = import_manifest("zombie", namespace, src, None, **_spec(**{"qdrant.url": shim.url}))
        if os.environ.get("PYTHONPATH"):  # a worktree's importer before the installed one
            env = doc["spec"]["importer"]["env"]
            env.append({"name": "PYTHONPATH", "value": os.environ["PYTHONPATH"]})
        create_import(k8s_api, doc)
        first = wait_for(_running_on(core_v1, namespace, "zombie"), 240, "the first pod")
        wait_for(lambda: shim.upserted >= 10, 300, "points in the server", 0.2)
        first = core_v1.read_namespaced_pod(first.metadata.name, namespace)
        pid = wait_for(lambda: importer_pid(first), 30, "the importer's pid")
        start = orphans.start_time(pid)
        sampler = CheckpointSampler(core_v1, namespace, cm_name).start()
        cut = first.spec.node_name
        try:
            nodeops.partition(cut)
            second = wait_for(
                _running_on(core_v1, namespace, "zombie", not_on=cut),
                MONITOR_GRACE + NODE_LOST_SECONDS + 90,
                "attempt M running on the other node",
            )
            wait_for(lambda: _gone(pid, start), 60, "the zombie process to end", 0.2)
            zombie_log = _container_log(namespace, first).read_text(errors="replace")
        finally:
            if cut:
                nodeops.restore(cut)
        st = wait_phase(k8s_api, namespace, "zombie", ("Succeeded",), 600, op.tail)
        sampler.stop()
    fence_attempts = sorted({s[0] for s in sampler.samples})
    # fenced by the fence annotation, or, when the API server saw the pod's deletion first, by
    # its bound token's revocation (401): either way it stops without writing
    fenced = ("superseded by attempt", "revoked this pod's credentials")
    line = next((ln for ln in zombie_log.splitlines() if any(f in ln for f in fenced)), "")
    assert "stopping without writing (exit 79)" in line, zombie_log[-3000:]
    after = zombie_log.split(line, 1)[1].strip()
    assert "Traceback" not in after, after  # nothing after the refusal but the exit
    assert len(fence_attempts) >= 2, sampler.samples[-5:]  # the fence rose while it ran
    assert sampler.samples, sampler.errors
    assert sampler.regressions() == [], sampler.regressions()[:10]
    assert second.spec.node_name != cut
    assert st["restarts"]["evicted"] >= 1, st["restarts"]
    points = shim.points("test")
    lib.assert_same_points(points, _reference(tmp_path, src))
    print(
        f"node {cut} partitioned: zombie pid {pid} logged {line.split(': ', 1)[-1]!r} and "
        f"ended while attempt M ran on {second.spec.node_name}; {len(sampler.samples)} "
        f"checkpoint samples, fences {fence_attempts}, none went back; restarts "
        f"{st['restarts']}; {len(points)} points == reference"
    )


def _hog(namespace: str, node: str, memory_kib: int, priority_class: str) -> dict[str, Any]:
    """A pod of ``priority_class`` pinned to ``node`` that requests ``memory_kib``."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hog", "namespace": namespace},
        "spec": {
            "priorityClassName": priority_class,
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "hog", "image": "python",
                "command": ["python", "-c", "import time; time.sleep(3600)"],
                "resources": {"requests": {"memory": f"{memory_kib}Ki", "cpu": "10m"}},
            }],
        },
    }  # fmt: skip


def _free_kib_without(core: client.CoreV1Api, node: str, exclude: str) -> int:
    """``node``'s allocatable memory less the requests of its live pods other than ``exclude``."""
    n = core.read_node(node)
    free = int(n.status.allocatable["memory"].removesuffix("Ki"))
    pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    for p in pods:
        if p.metadata.name == exclude or p.status.phase in ("Succeeded", "Failed"):
            continue
        for c in p.spec.containers:
            req = ((c.resources.requests or {}) if c.resources else {}).get("memory")
            free -= int(quantity.memory_bytes(req) // 1024) if req else 0
    return free


def test_preempted_importer_resumes_elsewhere_counted_as_an_eviction(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    two_nodes: list[str],
    shim: Any,
) -> None:
    src = _src(tmp_path)
    sched = client.SchedulingV1Api(k8s_api)
    high = f"{namespace}-high"[:63]
    sched.create_priority_class(client.V1PriorityClass(
        metadata=client.V1ObjectMeta(name=high), value=1000000,
        description="e2e: preempts the importer",
    ))  # fmt: skip
    watcher = PodWatcher(k8s_api, namespace).start()
    try:
        with operator(namespace, tmp_path / "operator.log") as op:
            doc = import_manifest("pre", namespace, src, None, **_spec(**{"qdrant.url": shim.url}))
            create_import(k8s_api, doc)
            first = wait_for(_running_on(core_v1, namespace, "pre"), 240, "the first pod")
            wait_for(lambda: shim.upserted >= 10, 300, "points in the server", 0.2)
            node = first.spec.node_name
            # fits only without the importer (it requests 1Gi: its memory limit)
            kib = _free_kib_without(core_v1, node, first.metadata.name) - 512 * 1024
            core_v1.create_namespaced_pod(namespace, _hog(namespace, node, kib, high))
            second = wait_for(
                _running_on(core_v1, namespace, "pre", not_on=node), 180, "the shard elsewhere"
            )
            wait_for(lambda: first.metadata.name in watcher.exit_codes, 60, "the victim's exit")
            st = wait_phase(k8s_api, namespace, "pre", ("Succeeded",), 600, op.tail)
    finally:
        watcher.stop()
        sched.delete_priority_class(high)
    preempted = [e["message"] for e in events_of(namespace) if e["reason"] == "Preempted"]
    assert preempted, [e["reason"] for e in events_of(namespace)]
    assert watcher.disruptions.get(first.metadata.name) == "PreemptionByScheduler", watcher
    assert watcher.exit_codes[first.metadata.name] == 75, watcher.exit_codes  # checkpointed
    # the operator's word for it: "was preempted by the scheduler" when it saw the pod ended
    # with its DisruptionTarget condition, "was deleted" when it saw it ended while deleted,
    # "disappeared before it terminated" when the deletion had already completed (the node
    # agent removes the pod right after the exit)
    told = [e["message"] for e in events_of(namespace) if e["reason"] == "Evicted"]
    assert len(told) == 1, told
    words = ("was preempted by the scheduler", "was deleted", "disappeared")
    assert any(w in told[0] for w in words), told
    assert second.spec.node_name != node
    r = st["restarts"]
    assert r["evicted"] >= 1, r
    assert r["total"] == r["evicted"], r  # not failures, not kills
    points = shim.points("test")
    lib.assert_same_points(points, _reference(tmp_path, src))
    print(
        f"importer on {node} preempted ({preempted[0]}; exit 75; operator: {told[0]!r}): "
        f"resumed on {second.spec.node_name}; restarts {r}; {len(points)} points == reference"
    )


def _drain(node: str, name: str) -> subprocess.CompletedProcess[str]:
    """``kubectl drain`` of ``node`` (only the import's pods) with a 20 s timeout."""
    return subprocess.run(
        [str(paths().bin / "kubectl"), "drain", node, f"--pod-selector={LABEL}={name}",
         "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=20s"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def test_a_disruption_budget_holds_a_drain_while_the_importer_runs(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    two_nodes: list[str],
    shim: Any,
) -> None:
    """A following import (mode Continuous: it runs until told otherwise, however fast the
    machine) with ``maxUnavailable: 0``: a drain is refused while its importer runs; once the
    import is suspended (its pod ended by the operator) the drain goes through."""
    src = _src(tmp_path, conversations=4, turns=12)
    budget = {"maxUnavailable": 0}
    node = ""
    try:
        with operator(namespace, tmp_path / "operator.log"):
            doc = import_manifest("pdb", namespace, src, None, **_spec(**{
                "qdrant.url": shim.url, "importer.podDisruptionBudget": budget,
                "mode": "Continuous"}))  # fmt: skip
            create_import(k8s_api, doc)
            first = wait_for(_running_on(core_v1, namespace, "pdb"), 240, "the first pod")
            wait_for(lambda: shim.upserted >= 10, 300, "points in the server", 0.2)
            node = first.spec.node_name
            pdb = client.PolicyV1Api(k8s_api).read_namespaced_pod_disruption_budget(
                "pdb-importer", namespace
            )
            held = _drain(node, "pdb")
            during = core_v1.read_namespaced_pod(first.metadata.name, namespace)
            phase_during = get_import(k8s_api, namespace, "pdb")["status"]["phase"]
            kubectl("patch", "ei", "pdb", "-n", namespace, "--type", "merge",
                    "-p", '{"spec":{"suspend":true}}')  # fmt: skip
            wait_for(lambda: _live_pod(core_v1, namespace, "pdb") is None, 180, "no live pod")
            done = _drain(node, "pdb")
            st = get_import(k8s_api, namespace, "pdb")["status"]
    finally:
        if node:
            kubectl("uncordon", node)
    assert pdb.spec.max_unavailable == 0
    assert pdb.metadata.owner_references[0].kind == "EmbeddingImport"
    assert held.returncode != 0, held.stdout
    assert "violate the pod's disruption budget" in held.stderr, held.stderr[-2000:]
    assert during.metadata.deletion_timestamp is None
    assert during.status.phase == "Running"
    assert phase_during in ("Running", "CatchingUp", "Synced"), phase_during
    assert done.returncode == 0, done.stderr[-2000:]
    assert st["restarts"]["total"] == 0, st["restarts"]
    print(
        f"drain of {node} with maxUnavailable 0 while importing: exit {held.returncode} "
        f"({held.stderr.strip().splitlines()[-1][:160]}); after the import was suspended: exit "
        f"{done.returncode}; restarts {st['restarts']}"
    )
