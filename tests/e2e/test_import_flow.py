"""The whole import flow on the real dev cluster: EmbeddingImport -> operator -> importer pods
(real processes under real memory cgroups) -> embedded Qdrant on the node, checked against a
standalone, uninterrupted ``embedding-importer run`` of the same corpus.

Each test runs its own operator watching only its own namespace (``namespaced_operator``), so
the tests can share the cluster with other sessions. The corpus (24 Claude Code sessions,
bench/corpus.py) and its reference import are made once per session (``flow_corpus``).

(a) a sample import succeeds with exactly the reference's point IDs and counters
(b) kernel OOM kills (fault hook, threshold off): rolled, counted as oomKilled, Warning events,
    exactly the reference's points
(c) the importer's own threshold (exit 75): rolled, counted as threshold, no OOM
    ((b) and (c) are one parametrised scenario, flow_helpers.MEMORY_SCENARIOS, that
    test_kubelet_tier.py runs under a real kubelet)
(d) the operator SIGKILLed twice mid-import (2 shards; once until its pods have ended, once
    right as a pod ends):
    completes, no restart lost or invented, never two live pods in a shard (a pod watch runs
    for the whole test)
(e) invalid specs refused by the API server: covered by
    tests/e2e/test_operator_api.py::test_invalid_specs_are_refused_at_apply (12 cases), not
    repeated here
(f) deleting the import removes its pods, checkpoints and RBAC through the garbage collector

A regression test pins a bug found on the way: kopf's timer finalizer made deletion wait for
the operator (a resync loop, no finalizer). Two importer bugs found here
are fixed (a4ab192) and kept as regression tests:
counters over-counted after a stop inside a long record; format auto misread Claude Code
sessions that start with a summary line.

Runtime: ~6 min for the module on the shared 2-core machine at load ~8, ~14 min at load 20-40
(the sample import alone 50 s and 220 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("flow_helpers")  # before the import: its asserts explain

from flow_helpers import (  # noqa: E402
    COLLECTION,
    MEMORY_SCENARIOS,
    Corpus,
    MemoryScenario,
    NamespacedOperator,
    PodWatch,
    apply,
    assert_same_points,
    checkpoints,
    event_count,
    fmt_pods,
    import_events,
    import_manifest,
    kubectl,
    qdrant_points,
    run_memory_scenario,
    terminations,
    wait_phase,
)
from kubernetes import client  # noqa: E402

from devcluster.testing import wait_for  # noqa: E402

# fixtures: flow_corpus, namespaced_operator, pod_watch, qdrant_dir
pytest_plugins = ["flow_helpers"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_sample_import_succeeds_with_the_reference_points(
    namespace: str,
    namespaced_operator: NamespacedOperator,
    pod_watch: PodWatch,
    flow_corpus: Corpus,
    qdrant_dir: Path,
    core_v1: client.CoreV1Api,
) -> None:
    t0 = time.monotonic()
    apply(
        import_manifest(
            "sample", namespace, flow_corpus.root, qdrant_dir, policy={"recycleEveryFiles": 10}
        )
    )
    seen: list[str] = []
    st = wait_phase("sample", namespace, namespaced_operator, progress=seen)
    elapsed = time.monotonic() - t0
    pods = pod_watch.settled()

    # 24 files, a planned roll every 10 files: pods a1 (10), a2 (10), a3 (4, exit 0)
    assert st["restarts"]["total"] == st["restarts"]["threshold"] == 2, st["restarts"]
    assert st["restarts"]["oomKilled"] == 0
    assert sorted((p.attempt, p.exit_code, p.reason) for p in pods.values()) == [
        ("1", 75, "Error"),
        ("2", 75, "Error"),
        ("3", 0, "Completed"),
    ], fmt_pods(pods)
    conds = {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}
    assert conds["Succeeded"] == ("True", "Completed"), conds
    assert conds["Progressing"][0] == "False", conds
    assert conds["Degraded"][0] == "False", conds
    assert st["observedGeneration"] == 1
    assert not st.get("currentPods"), st.get("currentPods")
    # kubectl get ei showed progress on the way (at least one intermediate value)
    assert seen[-1] == "24/24 (100%)"
    assert any(s.startswith(("10/24", "20/24")) for s in seen), seen

    cps = checkpoints("sample", namespace, 1)
    assert_same_points(flow_corpus, qdrant_dir, st, cps)
    events = import_events(core_v1, "sample", namespace)
    assert ("Normal", "Threshold") in events, events
    assert ("Normal", "Completed") in events, events
    assert pod_watch.max_live.get("0") == 1, pod_watch.max_live_sets
    print(
        f"\nsample import: {elapsed:.0f}s on the cluster; reference standalone run "
        f"{flow_corpus.reference.seconds}s; {len(flow_corpus.reference.ids)} points; "
        f"progress seen {seen}"
    )


def test_deleting_the_import_collects_pods_and_checkpoints(
    namespace: str,
    namespaced_operator: NamespacedOperator,
    flow_corpus: Corpus,
    qdrant_dir: Path,
    core_v1: client.CoreV1Api,
) -> None:
    # Two shards, one file per pod: importer pods are running when the import is deleted.
    apply(
        import_manifest(
            "gc", namespace, flow_corpus.root, qdrant_dir, shards=2, policy={"recycleEveryFiles": 1}
        )
    )
    sel = "eio.dev/import=gc"
    rbac = client.RbacAuthorizationV1Api(core_v1.api_client)

    def children() -> list[str]:
        pods = core_v1.list_namespaced_pod(namespace, label_selector=sel).items
        cms = core_v1.list_namespaced_config_map(namespace, label_selector=sel).items
        names = [f"pod/{p.metadata.name}" for p in pods] + [f"cm/{c.metadata.name}" for c in cms]
        names += [
            f"sa/{s.metadata.name}"
            for s in core_v1.list_namespaced_service_account(namespace).items
            if s.metadata.name.startswith("gc-")
        ]
        names += [f"role/{r.metadata.name}" for r in rbac.list_namespaced_role(namespace).items]
        names += [
            f"rolebinding/{b.metadata.name}"
            for b in rbac.list_namespaced_role_binding(namespace).items
        ]
        return sorted(names)

    def running_pods_and_checkpoints() -> Any:
        pods = core_v1.list_namespaced_pod(namespace, label_selector=sel).items
        running = {p.metadata.labels["eio.dev/shard"] for p in pods if p.status.phase == "Running"}
        ch = children()
        return ch if running == {"0", "1"} and {"cm/gc-ckpt-0", "cm/gc-ckpt-1"} <= set(ch) else None

    before = wait_for(
        running_pods_and_checkpoints,
        300,
        "importer pods Running in both shards, and both checkpoints",
    )
    uid = json.loads(kubectl("get", "ei", "gc", "-n", namespace, "-o", "json"))["metadata"]["uid"]
    for obj in (
        core_v1.read_namespaced_service_account("gc-importer", namespace),
        rbac.read_namespaced_role("gc-importer", namespace),
        rbac.read_namespaced_role_binding("gc-importer", namespace),
        core_v1.read_namespaced_config_map("gc-ckpt-0", namespace),
        core_v1.read_namespaced_config_map("gc-ckpt-1", namespace),
        *core_v1.list_namespaced_pod(namespace, label_selector=sel).items,
    ):
        refs = [
            (o.kind, o.name, o.uid, o.controller, o.block_owner_deletion)
            for o in obj.metadata.owner_references
        ]
        assert refs == [("EmbeddingImport", "gc", uid, True, True)], (obj.metadata.name, refs)
    assert {"sa/gc-importer", "role/gc-importer", "rolebinding/gc-importer"} <= set(before)

    t0 = time.monotonic()
    kubectl("delete", "ei", "gc", "-n", namespace, "--wait=false")
    wait_for(
        lambda: not children() or None,
        180,
        "pods, checkpoint ConfigMaps and importer RBAC collected",
    )
    assert kubectl("get", "ei", "-n", namespace, "-o", "name").strip() == ""
    print(f"\ncollected {len(before)} children in {time.monotonic() - t0:.1f}s: {before}")


def test_deletion_does_not_wait_for_the_operator(
    namespace: str, namespaced_operator: NamespacedOperator, flow_corpus: Corpus, qdrant_dir: Path
) -> None:
    doc = import_manifest("orphan", namespace, flow_corpus.root, qdrant_dir)
    doc["spec"]["suspend"] = True  # no pods needed: the operator only has to have seen it
    apply(doc)
    wait_for(
        lambda: (
            (
                json.loads(kubectl("get", "ei", "orphan", "-n", namespace, "-o", "json")).get(
                    "status"
                )
                or {}
            ).get("phase")
            == "Suspended"
        ),
        120,
        "the operator to report the import Suspended",
    )
    namespaced_operator.stop()
    kubectl("delete", "ei", "orphan", "-n", namespace, "--wait=false")

    def gone() -> bool:
        return kubectl("get", "ei", "-n", namespace, "-o", "name").strip() == ""

    try:
        wait_for(gone, 30, "the import to be deleted with the operator stopped")
    finally:
        namespaced_operator.start()  # removes the finalizer, so the namespace can go


@pytest.mark.parametrize("scenario", MEMORY_SCENARIOS)
def test_memory_rolls_keep_the_reference_points(
    scenario: MemoryScenario,
    namespace: str,
    namespaced_operator: NamespacedOperator,
    pod_watch: PodWatch,
    flow_corpus: Corpus,
    qdrant_dir: Path,
    core_v1: client.CoreV1Api,
) -> None:
    """(b) kernel OOM kills and (c) threshold exits, on the node agent tier (the kubelet tier
    runs the same scenarios in test_kubelet_tier.py)."""
    run = run_memory_scenario(
        scenario, namespace, namespaced_operator, pod_watch, flow_corpus, qdrant_dir, core_v1
    )
    pods, rolled = run.pods, run.rolled
    # the node agent's own bookkeeping: attempts in order, the limit never grown, one live pod
    ends = terminations(pods)
    assert [int(e[1]) for e in ends] == list(range(1, len(ends) + 1)), run.detail
    assert {p.memory_limit for p in pods.values()} == {scenario.memory}, run.detail
    assert pod_watch.max_live == {"0": 1}, pod_watch.max_live_sets
    if scenario.name == "oom":
        assert all(e[2] == 137 for e in rolled), run.detail
        normal = [r for t, r in import_events(core_v1, scenario.name, namespace) if t == "Normal"]
        assert {"Started", "Restarted"} & set(normal), normal
    else:
        assert run.checkpoints[0]["peakMemoryBytes"] < 1024 * 2**20
    assert event_count(core_v1, scenario.name, namespace, "Normal", "Completed") == 1
    print(f"\n{scenario.name} rolls: {len(rolled)}; pods:\n{fmt_pods(pods)}")


def test_operator_sigkilled_mid_import_never_runs_two_pods_per_shard(
    namespace: str,
    namespaced_operator: NamespacedOperator,
    pod_watch: PodWatch,
    flow_corpus: Corpus,
    qdrant_dir: Path,
    core_v1: client.CoreV1Api,
) -> None:
    # Two shards, a planned roll every 2 files: many pod endings, some while no operator runs.
    apply(
        import_manifest(
            "crashop",
            namespace,
            flow_corpus.root,
            qdrant_dir,
            shards=2,
            policy={"recycleEveryFiles": 2},
        )
    )

    def files_done() -> int:
        st = (
            json.loads(kubectl("get", "ei", "crashop", "-n", namespace, "-o", "json")).get("status")
            or {}
        )
        return int((st.get("counts") or {}).get("filesDone") or 0)

    def ended() -> int:
        return sum(p.phase in ("Succeeded", "Failed") for p in pod_watch.snapshot().values())

    def all_ended() -> bool:
        pods = pod_watch.snapshot().values()
        return bool(pods) and all(p.phase in ("Succeeded", "Failed") for p in pods)

    wait_for(lambda: files_done() >= 4, 600, "4 files done")
    namespaced_operator.kill()
    killed_at = [files_done()]
    # pods keep running, end (exit 75) and nobody rolls them; then the operator comes back
    wait_for(all_ended, 600, "every importer pod ending with the operator down")
    namespaced_operator.start()

    # Second kill: the moment a pod ends, while the operator is reacting to it (writing the
    # shard's status, creating the next pod); the next reconcile must neither lose that pod
    # nor start a second one.
    n = ended()
    wait_for(lambda: ended() > n, 600, "another pod ending", interval=0.05)
    time.sleep(0.1)  # deliberate: kill 0.1 s into the operator's reaction, not to wait for it
    namespaced_operator.kill()
    killed_at.append(files_done())
    namespaced_operator.start()
    st = wait_phase("crashop", namespace, namespaced_operator)
    pods = pod_watch.settled()
    ends = terminations(pods)
    detail = f"{json.dumps(st['restarts'])}\n{fmt_pods(pods)}\nwatch errors {pod_watch.errors}"

    assert pod_watch.max_live == {"0": 1, "1": 1}, (pod_watch.max_live_sets, detail)
    for shard in ("0", "1"):
        mine = [e for e in ends if e[0] == shard]
        assert [int(e[1]) for e in mine] == list(range(1, len(mine) + 1)), detail
        assert mine[-1][2:] == (0, "Completed"), detail
        assert all(e[2] == 75 for e in mine[:-1]), detail
    # the restart of the operator neither lost nor invented a restart
    assert st["restarts"]["total"] == st["restarts"]["threshold"] == len(ends) - 2, detail
    assert namespaced_operator.starts == 3
    assert_same_points(flow_corpus, qdrant_dir, st, checkpoints("crashop", namespace, 2), shards=2)
    print(
        f"\noperator killed at {killed_at} files done; {pod_watch.events} pod events; "
        f"pods:\n{fmt_pods(pods)}"
    )


def test_counters_match_qdrant_after_a_stop_inside_a_long_record(tmp_path: Path) -> None:
    # Regression (found here, fixed in a4ab192): a stop between the token windows of a record
    # longer than the chunk size resumed at the record's first window, so windows were embedded
    # and counted twice (944 counted vs 943 points in the demo), and a run that got through fewer
    # windows than the record has never advanced.
    # Standalone, deterministic: one paragraph of ~500 words (several 120-token pieces), a
    # window of one chunk (batch 1, sort window 1) and a threshold every run is above, so each
    # run embeds exactly one chunk, checkpoints and exits 75.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    try:
        import common
    finally:
        sys.path.pop(0)
    vocab = common.vocabulary()
    src = tmp_path / "long.txt"
    src.write_text(" ".join(vocab[i * 37 % len(vocab)] for i in range(500)) + "\n")
    ck, q = tmp_path / "checkpoint.json", tmp_path / "qdrant"
    exe = Path(sys.prefix) / "bin" / "embedding-importer"
    for _ in range(3):
        run = subprocess.run(
            [
                str(exe),
                "run",
                "--source",
                str(src),
                "--collection",
                COLLECTION,
                "--qdrant-path",
                str(q),
                "--checkpoint",
                f"file:{ck}",
                "--batch-size",
                "1",
                "--sort-window",
                "1",
                "--memory-threshold",
                "20Mi",
                "--progress",
                "off",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 75, run.stderr[-2000:]
    cp = json.loads(ck.read_text())
    points = qdrant_points(q)
    # three runs, one chunk each: three different pieces in Qdrant, and counted once each
    assert cp["counters"]["points"] == len(points) == 3, (cp["counters"], len(points))


def test_auto_format_reads_sessions_that_start_with_a_summary(
    flow_corpus: Corpus, tmp_path: Path
) -> None:
    # Regression (found here, fixed in a4ab192): format auto looked at the first line only, took
    # sessions starting with a summary record for generic JSONL and imported 0 points.
    one = sorted(flow_corpus.root.rglob("*.jsonl"))[0]
    assert json.loads(one.read_text().splitlines()[0])["type"] == "summary"
    ck = tmp_path / "checkpoint.json"
    run = subprocess.run(
        [
            str(Path(sys.prefix) / "bin" / "embedding-importer"),
            "run",
            "--source",
            str(one),
            "--format",
            "auto",
            "--collection",
            COLLECTION,
            "--qdrant-path",
            str(tmp_path / "q"),
            "--checkpoint",
            f"file:{ck}",
            "--progress",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    counters = json.loads(ck.read_text())["counters"]
    assert counters["points"] > 0, counters
    assert "no_text_field" not in counters["skipped"], counters
