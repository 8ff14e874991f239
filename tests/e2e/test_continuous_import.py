"""A Continuous import on the dev cluster (issue 10): one importer pod follows a live directory,
is rolled at a low memory threshold, and its collection equals a fresh import of the tree.

The import runs under this worktree's operator (started with the test's repository first on
``PYTHONPATH``, watching only the test's namespace) and the importer the node agent runs. A
test hook makes the importer hold 100 MB more per file it imports, so with a 450Mi threshold it
exits 75 every few files and the operator rolls it, in follow mode as in a one-shot import.

1. Apply ``mode: Continuous`` (poll every 2 s, ``onDelete: Delete``) over a small mixed corpus
   and wait for ``Synced=True`` (PHASE Synced, never Succeeded).
2. Append records to existing files and add files (one in a new directory); wait until the
   import is Synced again after the change and its counters have settled.
3. Suspend (the follower stops, the checkpoint stays; ``Synced=False/Suspended``), then compare
   every point (IDs, payloads, vectors) with a fresh standalone import of the tree.
4. While suspended, append more, add a file and delete one; resume: the next pod imports what
   changed meanwhile and deletes the deleted file's points. Synced again, suspend, compare.

Throughout 1-3 a reader asks the follower's read API (Qdrant REST on port 6333, which the
import's Service ``follow-reads`` targets; node-agent pods share the host network, so the test
reaches it at 127.0.0.1) for the count five times a second: the collection is searchable while
it syncs and between rolls, the appended file's points are found without suspending, and the
longest refusal through a roll is measured.

Points are compared only while no importer runs (embedded Qdrant locks its directory).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from reliability_helpers import (
    PodWatcher,
    create_import,
    get_import,
    import_manifest,
    importer_testlib,
    kubectl,
    patch_spec,
    share_tree,
    shared_dir,
)

from devcluster.testing import OperatorProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
lib = importer_testlib()
NAME = "follow"
POLL_SECONDS = 2
RESYNC_SECONDS = 2
# Counters and Synced unchanged this long = settled: a few polls of the importer and
# resyncs of the operator (status lags the checkpoint by up to one resync).
SETTLE_SECONDS = 3 * POLL_SECONDS + 3 * RESYNC_SECONDS
FIRST_SYNC_TIMEOUT = 900.0
SYNC_TIMEOUT = 600.0


# --------------------------------------------------------------------------------------------
# the tree and its changes
# --------------------------------------------------------------------------------------------
def _append(path: Path, lines: list[str]) -> None:
    """Whole lines in one write: the importer must never see a record without its newline."""
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))


def _lines(path: Path, start: int, count: int) -> list[str]:
    return path.read_text().splitlines()[start : start + count]


def _add(src: Path, rel: str, content: str) -> None:
    target = src / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    share_tree(src)


def _files(src: Path) -> int:
    return sum(1 for p in src.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------
# waiting on the import
# --------------------------------------------------------------------------------------------
def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


def _diagnosis(api: client.ApiClient, namespace: str, op: OperatorProcess) -> str:
    try:
        cm = client.CoreV1Api(api).read_namespaced_config_map(f"{NAME}-ckpt-0", namespace)
        cp = (cm.data or {}).get("checkpoint.json", "")
    except client.ApiException as e:
        cp = f"({e.status})"
    pods = kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False)
    return f"checkpoint: {cp}\npods:\n{pods}\n--- operator log ---\n{op.tail(60)}"


def _assert_crd_still_ours(body: dict[str, Any]) -> None:
    """The cluster is shared: a session that applies an older CRD (without spec.mode) makes the
    API server prune the field, and the import silently becomes a one-shot import."""
    if body["spec"].get("mode") != "Continuous":
        raise AssertionError(
            "spec.mode was pruned: the EmbeddingImport CRD on the cluster is an older one "
            "(another test session applied its crds/ meanwhile); rerun when none runs"
        )


def wait_synced(
    api: client.ApiClient,
    namespace: str,
    op: OperatorProcess,
    after: datetime,
    timeout: float,
) -> dict[str, Any]:
    """Synced=True, no lag, last sync after ``after``, and the counters unchanged for
    SETTLE_SECONDS (so a change still being imported cannot pass for caught up)."""
    stable: tuple[Any, ...] | None = None
    since = 0.0
    st: dict[str, Any] = {}

    def synced_and_settled() -> dict[str, Any] | None:
        nonlocal stable, since, st
        body = get_import(api, namespace, NAME)
        _assert_crd_still_ours(body)
        st = body.get("status") or {}
        if st.get("phase") in ("Failed", "Invalid", "Succeeded"):
            raise AssertionError(
                f"{NAME} is {st['phase']}: {json.dumps(st, indent=1)}\n"
                f"{_diagnosis(api, namespace, op)}"
            )
        last = _time(st.get("lastSyncTime"))
        ok = (
            _condition(st, "Synced").get("status") == "True"
            and (st.get("lag") or {}).get("files", 0) == 0
            and last is not None
            and last > after
        )
        counts = st.get("counts") or {}
        key = (
            counts.get("filesTotal"),
            counts.get("records"),
            counts.get("chunks"),
            counts.get("points"),
            st.get("lastSyncTime") is not None,
        )
        if not ok:
            stable = None
        elif key != stable:
            stable, since = key, time.monotonic()
        elif time.monotonic() - since >= SETTLE_SECONDS:
            return st
        return None

    return wait_for(
        synced_and_settled,
        timeout,
        f"{NAME} Synced after {after.isoformat()} and settled",
        interval=1,
        diagnose=lambda: f"{json.dumps(st, indent=1)}\n{_diagnosis(api, namespace, op)}",
    )


def suspend_and_wait(api: client.ApiClient, core: client.CoreV1Api, namespace: str) -> None:
    """spec.suspend: the follower is deleted; wait until no importer process is left."""
    patch_spec(api, namespace, NAME, {"suspend": True})

    def stopped() -> bool:
        st = get_import(api, namespace, NAME).get("status") or {}
        pods = core.list_namespaced_pod(namespace, label_selector=f"eio.dev/import={NAME}").items
        live = [
            p.metadata.name
            for p in pods
            if (p.status.phase if p.status else None) not in ("Succeeded", "Failed")
        ]
        return st.get("phase") == "Suspended" and not live

    wait_for(stopped, 180, "the follower stopping after suspend", interval=1)
    st = get_import(api, namespace, NAME)["status"]
    assert (_condition(st, "Synced")["status"], _condition(st, "Synced")["reason"]) == (
        "False",
        "Suspended",
    )


def assert_equals_fresh_import(src: Path, qdrant: Path, work: Path) -> int:
    """Every point (ID, payload, vector) equals a fresh standalone import of the tree."""
    ref = lib.Workspace(work, src)
    # The importer as the node agent runs it (the venv's install), not a copy on PYTHONPATH.
    r = ref.run("--batch-size", "8", "--threads", "1", env={"PYTHONPATH": ""}, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    points, expected = lib.read_points(qdrant), ref.points()
    lib.assert_same_points(points, expected)
    return len(points)


class Reader:
    """Reads of the follower's store through its read API, five a second, in a thread."""

    URL = "http://127.0.0.1:6333/collections/test/points"

    def __init__(self) -> None:
        self.answers: list[tuple[float, int | None]] = []  # (monotonic time, count or None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def ask(self, op: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(
            f"{self.URL}/{op}", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())["result"]

    def try_ask(self, op: str, body: dict[str, Any]) -> Any:
        """The points of a scroll, or None while no importer answers (a roll: ask again)."""
        try:
            return self.ask(op, body)["points"]
        except OSError:
            return None

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                count: int | None = int(self.ask("count", {})["count"])
            except (OSError, ValueError, KeyError):
                count = None  # no holder now (a roll) or not answering yet
            self.answers.append((time.monotonic(), count))

    def start(self) -> Reader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def longest_refusal(self) -> float:
        """The longest run of refused reads after the first answer, in seconds."""
        worst, since = 0.0, None
        answered = False
        for at, count in self.answers:
            if count is not None:
                if since is not None:
                    worst = max(worst, at - since)
                answered, since = True, None
            elif answered and since is None:
                since = at
        return worst


def assert_read_service(core: client.CoreV1Api, namespace: str, st: dict[str, Any]) -> None:
    assert st.get("readService") == f"{NAME}-reads", st
    svc = core.read_namespaced_service(f"{NAME}-reads", namespace)
    assert svc.spec.selector == {"eio.dev/import": NAME}
    assert [(p.port, p.target_port) for p in svc.spec.ports] == [(6333, "qdrant-http")]


# --------------------------------------------------------------------------------------------
def test_continuous_import_stays_synced_with_a_growing_tree(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    src = lib.make_corpus(
        shared_dir(tmp_path / "data"),
        seed=1010,
        conversations=4,
        turns=12,
        jsonl_files=2,
        records=10,
        markdown=1,
        broken=False,
    )
    share_tree(src)
    extra = lib.make_corpus(
        tmp_path / "extra",
        seed=2020,
        conversations=3,
        turns=8,
        jsonl_files=1,
        records=6,
        markdown=0,
        broken=False,
    )
    qdrant = shared_dir(tmp_path / "qdrant")
    watcher = PodWatcher(k8s_api, namespace).start()
    op = OperatorProcess(
        namespace,
        tmp_path / "operator.log",
        resync_seconds=RESYNC_SECONDS,
        # this repository's operator, whatever venv (and editable install) runs it
        extra_env={"PYTHONPATH": f"{REPO}:{REPO / 'operator'}"},
    )
    op.start()
    reader = Reader().start()
    try:
        t0 = datetime.now(UTC)
        create_import(
            k8s_api,
            import_manifest(
                NAME,
                namespace,
                src,
                qdrant,
                mode="Continuous",
                **{
                    "sources.pollIntervalSeconds": POLL_SECONDS,
                    "sources.onDelete": "Delete",
                    "importer.env": [{"name": "IMPORTER_FAULT_HOLD_MB_PER_FILE", "value": "100"}],
                    "memoryPolicy.threshold": "450Mi",
                    "memoryPolicy.retryBudget": 10,
                    "memoryPolicy.keepTerminatedPods": 100,
                },
            ),
        )
        st = wait_synced(k8s_api, namespace, op, t0, FIRST_SYNC_TIMEOUT)
        assert st["phase"] == "Synced"
        assert (_condition(st, "Succeeded")["status"], _condition(st, "Succeeded")["reason"]) == (
            "Unknown",
            "Continuous",
        )
        assert st["counts"]["filesTotal"] == _files(src)
        line = kubectl("get", "ei", NAME, "-n", namespace, "--no-headers")
        assert " Synced " in f" {line} ", line
        assert "Succeeded" not in line, line
        pod = core_v1.read_namespaced_pod(st["shards"][0]["pod"], namespace)
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert (
            env["IMPORTER_FOLLOW"],
            env["IMPORTER_ON_DELETE"],
            env["IMPORTER_POLL_INTERVAL"],
        ) == ("true", "delete", str(POLL_SECONDS))

        # 2. appends and new files while the follower runs
        conv, docs = src / "conversations", src
        _append(conv / "conv-00.jsonl", _lines(extra / "conversations" / "conv-00.jsonl", 0, 4))
        _append(docs / "docs-1.jsonl", _lines(extra / "docs-0.jsonl", 0, 3))
        _add(
            src,
            "conversations/conv-11.jsonl",
            (extra / "conversations" / "conv-01.jsonl").read_text(),
        )
        _add(src, "late/docs-late.jsonl", (extra / "docs-0.jsonl").read_text())
        t1 = datetime.now(UTC)
        st = wait_synced(k8s_api, namespace, op, t1, SYNC_TIMEOUT)
        assert st["counts"]["filesTotal"] == _files(src), st["counts"]
        assert_read_service(core_v1, namespace, st)
        # searchable while it syncs: the new file's points, through the follower
        late = {"must": [{"key": "source", "match": {"value": "late/docs-late.jsonl"}}]}
        found = wait_for(lambda: reader.try_ask("scroll", {"filter": late, "limit": 100}),
                         120, "the new file's points through the read API")  # fmt: skip
        assert all(p["payload"]["source"] == "late/docs-late.jsonl" for p in found)
        reader.stop()
        answered = [c for _, c in reader.answers if c is not None]
        assert answered, "no read was answered while the import ran"
        assert reader.longest_refusal() > 0, "no roll was seen by the reader"  # and it came back

        # 3. suspend: the follower stops, the points equal a fresh import of the tree
        suspend_and_wait(k8s_api, core_v1, namespace)
        first = assert_equals_fresh_import(src, qdrant, tmp_path / "ref-1")

        # 4. changes while suspended (one file deleted), then resume
        _append(conv / "conv-11.jsonl", _lines(extra / "conversations" / "conv-02.jsonl", 0, 2))
        _append(conv / "conv-03.jsonl", _lines(extra / "conversations" / "conv-02.jsonl", 2, 2))
        _add(
            src,
            "conversations/conv-12.jsonl",
            (extra / "conversations" / "conv-02.jsonl").read_text(),
        )
        (docs / "docs-0.jsonl").unlink()
        t2 = datetime.now(UTC)
        patch_spec(k8s_api, namespace, NAME, {"suspend": False})
        st = wait_synced(k8s_api, namespace, op, t2, SYNC_TIMEOUT)
        assert st["counts"]["filesTotal"] == _files(src), st["counts"]
        suspend_and_wait(k8s_api, core_v1, namespace)
        second = assert_equals_fresh_import(src, qdrant, tmp_path / "ref-2")

        st = get_import(k8s_api, namespace, NAME)["status"]
        restarts = st["restarts"]
        print(
            f"\ncontinuous import: {first} then {second} points == fresh imports; restarts "
            f"{json.dumps(restarts)}; pods {sorted(watcher.seen)}; reads answered "
            f"{len(answered)} of {len(reader.answers)}, longest refusal through a roll "
            f"{reader.longest_refusal():.1f}s"
        )
        # it kept rolling at its threshold, and nothing else ended a pod
        assert restarts["threshold"] >= 1, restarts
        for cause in ("oomKilled", "crash", "killed", "exited", "stalled", "overThreshold"):
            assert restarts.get(cause, 0) == 0, restarts
        assert not watcher.violations, watcher.violations
        events = kubectl(
            "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={NAME}"
        )
        assert "Resumed" in events, events
        assert "Suspended" in events, events
    finally:
        reader.stop()
        watcher.stop()
        kubectl("delete", "ei", NAME, "-n", namespace, "--wait=true", "--timeout=120s", check=False)
        op.stop()
        shutil.rmtree(tmp_path / "extra", ignore_errors=True)
