"""Change the build settings of a live import on the dev cluster (issue 17, operator side).

A Continuous import (embedded store) over a small corpus is Synced with chunk size 120; the test
patches ``spec.chunking.size`` to 60. The operator ends the follower gracefully (SpecChanged,
not a restart); the next pod fills ``convs--v1`` beside ``convs`` while the read API keeps
answering from ``test``; once caught up it switches (pointer file, one rename) and deletes
``convs``. Throughout, a reader scrolls every point ID through the read API (127.0.0.1:6333:
node-agent pods share the host network): every answer is the old set or the new one, never a
mix; the final points equal a fresh standalone import with chunk size 60.

The importer pods run this worktree's importer (``PYTHONPATH`` in ``spec.importer.env``), the
operator this worktree's operator. ``kubectl get embeddingimports`` is printed during the
rebuild and after (``-s`` shows it; README "Change the model of a live import").
"""

from __future__ import annotations

import json
import threading
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from reliability_helpers import (
    create_import,
    get_import,
    import_manifest,
    importer_testlib,
    kubectl,
    patch_spec,
    share_tree,
    shared_dir,
)
from test_continuous_import import suspend_and_wait, wait_synced

from devcluster.testing import OperatorProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
lib = importer_testlib()
NAME = "follow"  # wait_synced and suspend_and_wait of test_continuous_import name it so
# Not "test": node-agent pods of other sessions' imports (collection "test") may hold port 6333
# while ours rolls; a read of "convs" there is refused (404), never taken for ours.
URL = "http://127.0.0.1:6333/collections/convs/points/scroll"


class IdReader:
    """Every point ID through the read API, again and again, in a thread."""

    def __init__(self) -> None:
        self.answers: list[frozenset[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def ids(self) -> frozenset[str] | None:
        body = json.dumps({"limit": 100000, "with_payload": False}).encode()
        req = urllib.request.Request(URL, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                points = json.loads(resp.read())["result"]["points"]
        except (OSError, ValueError, KeyError):
            return None  # no holder now (a roll) or not answering yet
        return frozenset(str(p["id"]) for p in points)

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            got = self.ids()
            if got is not None:
                self.answers.append(got)

    def start(self) -> IdReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


def _diagnose(namespace: str, op: OperatorProcess) -> str:
    cm = kubectl("get", "configmap", f"{NAME}-ckpt-0", "-n", namespace, "-o",
                 "jsonpath={.data.checkpoint\\.json}", check=False)  # fmt: skip
    st = kubectl("get", "embeddingimports", NAME, "-n", namespace, "-o", "json", check=False)
    pods = kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False)
    return f"checkpoint: {cm}\nstatus: {st}\npods: {pods}\n{op.tail(80)}"


def _get(namespace: str) -> str:
    out = kubectl("get", "embeddingimports", "-n", namespace, check=False)
    print(f"\n$ kubectl get embeddingimports\n{out}")
    return str(out)


def test_a_chunk_size_change_rebuilds_beside_the_live_version(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    src = lib.make_corpus(shared_dir(tmp_path / "data"), seed=1717, conversations=4, turns=12,
                          jsonl_files=2, records=10, markdown=1, broken=False)  # fmt: skip
    share_tree(src)
    qdrant = shared_dir(tmp_path / "qdrant")
    code = f"{REPO}:{REPO / 'operator'}"
    op = OperatorProcess(namespace, tmp_path / "operator.log", resync_seconds=2,
                         extra_env={"PYTHONPATH": code})  # fmt: skip
    op.start()
    reader = IdReader().start()
    try:
        t0 = datetime.now(UTC)
        create_import(k8s_api, import_manifest(NAME, namespace, src, qdrant, mode="Continuous", **{
            "sources.pollIntervalSeconds": 2, "chunking.size": 120, "qdrant.collection": "convs",
            "importer.env": [{"name": "PYTHONPATH", "value": code}],
        }))  # fmt: skip
        wait_synced(k8s_api, namespace, op, t0, 900)
        old = wait_for(reader.ids, 60, "the read API answering", interval=1)
        assert old
        st = get_import(k8s_api, namespace, NAME)["status"]
        assert st["activeVersion"] == "convs"
        assert _condition(st, "Rebuilding")["reason"] == "Current"
        _get(namespace)

        t1, first = datetime.now(UTC), len(reader.answers)  # answers since the change
        patch_spec(k8s_api, namespace, NAME, {"chunking": {"size": 60}})
        seen: dict[str, Any] = {}

        def rebuilding() -> bool:
            s = get_import(k8s_api, namespace, NAME).get("status") or {}
            c = _condition(s, "Rebuilding")
            if c.get("status") == "True":
                seen.update(status=s, get=_get(namespace), ids=reader.ids())
            return c.get("status") == "True"

        wait_for(rebuilding, 600, "Rebuilding=True", interval=0.5)
        print("Rebuilding:", json.dumps(_condition(seen["status"], "Rebuilding")))
        assert seen["status"]["build"]["differences"] == ["chunk size 120 -> 60"]
        assert seen["status"]["build"]["target"] == "convs--v1"
        assert seen["status"]["activeVersion"] == "convs"
        assert seen["ids"] in (None, old)  # searches read the old version during the rebuild

        wait_synced(k8s_api, namespace, op, t1, 900)

        def switched() -> dict[str, Any] | None:
            s = get_import(k8s_api, namespace, NAME).get("status") or {}
            return s if s.get("activeVersion") == "convs--v1" else None

        st = wait_for(switched, 300, "activeVersion convs--v1", interval=1,
                      diagnose=lambda: _diagnose(namespace, op))  # fmt: skip
        assert (_condition(st, "Rebuilding")["status"],
                _condition(st, "Rebuilding")["reason"]) == ("False", "Current")  # fmt: skip
        assert st["restarts"]["total"] == 0  # the roll for new settings is not a restart
        new = wait_for(lambda: (ids := reader.ids()) != old and ids, 60, "new ids", interval=1)
        assert new
        _get(namespace)
        print("Rebuilding:", json.dumps(_condition(st, "Rebuilding")))
        events = kubectl("get", "events", "-n", namespace, "-o", "json", check=False)
        reasons = [e["reason"] for e in json.loads(str(events))["items"]]
        assert reasons.count("RebuildStarted") == 1, reasons
        assert reasons.count("RebuildSwitched") == 1, reasons
        assert "SpecChanged" in reasons, reasons
        reader.stop()
        # never a mix: every answer was the whole old version or the whole new one
        answers = reader.answers[first:]
        assert {a for a in answers if a not in (old, new)} == set()
        assert old in answers
        assert new in answers
        assert answers.index(new) > max(i for i, a in enumerate(answers) if a == old)  # once
        suspend_and_wait(k8s_api, core_v1, namespace)
    finally:
        reader.stop()
        op.stop()
    ref = lib.Workspace(tmp_path / "ref", src)
    r = ref.run("--batch-size", "8", "--threads", "1", "--chunk-size", "60", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    points, expected = lib.read_points(qdrant, "convs"), ref.points()
    lib.assert_same_points(points, expected)
    assert set(new) == set(points)
    assert not (qdrant / "convs").exists()  # the old version is deleted (keepOldVersions 0)
