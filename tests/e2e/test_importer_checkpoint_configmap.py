"""The importer's ConfigMap checkpoint store against the real API server of the dev cluster.

The operator pre-creates the ConfigMap (owned by the EmbeddingImport); the importer only reads
and replaces it with the resourceVersion it read, merging on 409 Conflict so that the stored
checkpoint never goes backwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes import client

from devcluster.testing import wait_for
from eio_common.contract import (
    CHECKPOINT_KEY,
    EXIT_SUPERSEDED,
    FENCE_ANNOTATION,
    Checkpoint,
    Counters,
    Lag,
)
from importer.checkpoint_store import ConfigMapStore, Superseded
from importer.checkpointer import FENCE_MAX_AGE

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent / "embedding-importer"


def _cm(core_v1: client.CoreV1Api, ns: str, name: str) -> client.V1ConfigMap:
    return core_v1.read_namespaced_config_map(name, ns)


def _run_args(src: Path, qdrant: Path, configmap: str, *extra: str) -> list[str]:
    """``embedding-importer run`` of ``src`` into collection e2e with a ConfigMap checkpoint."""
    return [str(BIN), "run", "--source", str(src), "--collection", "e2e",
            "--qdrant-path", str(qdrant), "--checkpoint", f"configmap:{configmap}",
            *extra]  # fmt: skip


def test_read_replace_keeps_metadata_and_other_keys(
    core_v1: client.CoreV1Api, namespace: str, devcluster_kubeconfig: Path
) -> None:
    name = "imp-ckpt-0"
    core_v1.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name, labels={"eio.dev/import": "imp"}),
            data={"note": "written by the operator"},
        ),
    )
    store = ConfigMapStore(namespace, name)
    assert store.load() is None
    cp = Checkpoint(
        files_total=10,
        files_done=4,
        lag=Lag(files=6, bytes=700),
        counters=Counters(files=4, points=40),
    )
    store.save(cp)
    cm = _cm(core_v1, namespace, name)
    assert cm.metadata.labels == {"eio.dev/import": "imp"}
    assert cm.data["note"] == "written by the operator"
    stored = Checkpoint.from_json(cm.data[CHECKPOINT_KEY])
    assert (stored.files_done, stored.lag.files, stored.lag.bytes) == (4, 6, 700)
    assert store.load() == stored


def test_conflict_is_merged_and_never_goes_backwards(
    core_v1: client.CoreV1Api, namespace: str, devcluster_kubeconfig: Path
) -> None:
    name = "imp-ckpt-1"
    core_v1.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={})
    )
    store = ConfigMapStore(namespace, name)
    store.save(Checkpoint(files_total=10, counters=Counters(files=2, chunks=20)))
    # another writer (e.g. a stale pod of an earlier attempt) stores more progress meanwhile
    cm = _cm(core_v1, namespace, name)
    cm.data[CHECKPOINT_KEY] = Checkpoint(
        files_total=10, counters=Counters(files=6, chunks=50, deleted=2), attempt=4
    ).to_json()
    core_v1.replace_namespaced_config_map(name, namespace, cm)
    # our write is based on an older view: the result must keep both writers' counts
    out = store.save(
        Checkpoint(files_total=10, counters=Counters(files=3, chunks=30, records=99), attempt=3)
    )
    stored = Checkpoint.from_json(_cm(core_v1, namespace, name).data[CHECKPOINT_KEY])
    assert stored == out
    c = stored.counters
    assert (c.files, c.chunks, c.records, c.deleted) == (6, 50, 99, 2)
    assert stored.attempt == 4


def test_missing_configmap_is_created(
    core_v1: client.CoreV1Api, namespace: str, devcluster_kubeconfig: Path
) -> None:
    store = ConfigMapStore(namespace, "standalone-ckpt-0")
    assert store.load() is None
    store.save(Checkpoint(files_total=1, files_done=1, complete=True))
    stored = Checkpoint.from_json(_cm(core_v1, namespace, "standalone-ckpt-0").data[CHECKPOINT_KEY])
    assert stored.complete


def test_importer_run_with_configmap_checkpoint(
    core_v1: client.CoreV1Api, namespace: str, devcluster_kubeconfig: Path, tmp_path: Path
) -> None:
    name = "run-ckpt-0"
    core_v1.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={})
    )
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"doc-{i}.md").write_text(f"# Doc {i}\n\nSome text about memory and vectors.\n")
    (src / "empty.txt").touch()
    args = _run_args(src, tmp_path / "q", f"{namespace}/{name}", "--recycle-every-files", "3")
    env = {
        "KUBECONFIG": str(devcluster_kubeconfig),
        "IMPORTER_POD_NAME": "run-s0-a0",
        "PATH": "/usr/bin:/bin",
    }
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 75, r.stderr
    first = Checkpoint.from_json(_cm(core_v1, namespace, name).data[CHECKPOINT_KEY])
    assert first.files_done == 3
    assert first.last_exit == "recycle"
    assert first.heartbeat.pod == "run-s0-a0"
    assert first.heartbeat.memory_bytes > 0
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    final = Checkpoint.from_json(_cm(core_v1, namespace, name).data[CHECKPOINT_KEY])
    assert final.complete
    assert final.files_done == 5
    assert final.attempt == 1
    assert final.counters.skipped == {"empty": 1}


# --- fencing (issue 18): the operator's fence on the checkpoint ConfigMap -------------------
def _fenced_cm(core_v1: client.CoreV1Api, ns: str, name: str) -> None:
    core_v1.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={})
    )


def _raise_fence(k8s_api: client.ApiClient, ns: str, name: str, attempt: int) -> None:
    """What the operator does before it creates attempt ``attempt``'s pod (its own code)."""
    from eio_operator.kube import RestKube

    RestKube(k8s_api).annotate_configmap(ns, name, {FENCE_ANNOTATION: str(attempt)})


def test_fence_refuses_the_checkpoint_write_of_a_superseded_attempt(
    core_v1: client.CoreV1Api,
    k8s_api: client.ApiClient,
    namespace: str,
    devcluster_kubeconfig: Path,
) -> None:
    name = "fence-ckpt-0"
    _fenced_cm(core_v1, namespace, name)
    _raise_fence(k8s_api, namespace, name, 1)
    store = ConfigMapStore(namespace, name, attempt=1)
    assert store.load() is None
    store.save(Checkpoint(files_total=10, counters=Counters(files=2), attempt=1))
    _raise_fence(k8s_api, namespace, name, 2)
    before = _cm(core_v1, namespace, name).data[CHECKPOINT_KEY]
    with pytest.raises(Superseded) as err:
        store.save(Checkpoint(files_total=10, counters=Counters(files=5), attempt=1))
    assert (err.value.attempt, err.value.newer) == (1, 2)
    with pytest.raises(Superseded):
        store.check_fence()
    assert _cm(core_v1, namespace, name).data[CHECKPOINT_KEY] == before
    # attempt 2, the current one, writes
    ConfigMapStore(namespace, name, attempt=2).save(
        Checkpoint(files_total=10, counters=Counters(files=6), attempt=2)
    )


def test_fence_raised_between_read_and_replace_is_a_conflict_then_a_refusal(
    core_v1: client.CoreV1Api,
    k8s_api: client.ApiClient,
    namespace: str,
    devcluster_kubeconfig: Path,
) -> None:
    """The compare-and-swap: the importer read fence 1, the operator raises it to 2 before the
    replace; the replace (with the old resourceVersion) is a 409, the re-read sees fence 2."""
    name = "fence-ckpt-1"
    _fenced_cm(core_v1, namespace, name)
    _raise_fence(k8s_api, namespace, name, 1)
    store = ConfigMapStore(namespace, name, attempt=1)
    real_read = store.api.read_namespaced_config_map
    reads: list[str] = []

    def read_then_operator_bumps(*args: object, **kwargs: object) -> object:
        cm = real_read(*args, **kwargs)
        reads.append(cm.metadata.resource_version)
        if len(reads) == 1:
            _raise_fence(k8s_api, namespace, name, 2)
        return cm

    store.api.read_namespaced_config_map = read_then_operator_bumps
    with pytest.raises(Superseded):
        store.save(Checkpoint(files_total=3, counters=Counters(files=1), attempt=1))
    assert len(reads) == 2  # the 409 made it read again
    assert CHECKPOINT_KEY not in (_cm(core_v1, namespace, name).data or {})


def _importer_env(kubeconfig: Path, attempt: int) -> dict[str, str]:
    env = {
        "KUBECONFIG": str(kubeconfig),
        "PATH": "/usr/bin:/bin",
        "IMPORTER_ATTEMPT": str(attempt),
        "IMPORTER_POD_NAME": f"fence-s0-a{attempt}",
    }
    if os.environ.get("PYTHONPATH"):  # a worktree's code before the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def test_importer_attempt_1_stops_with_exit_79_once_attempt_2_holds_the_fence(
    core_v1: client.CoreV1Api,
    k8s_api: client.ApiClient,
    namespace: str,
    devcluster_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    """Attempt 1 follows its source and caught up; the operator raises the fence to 2; a new
    file appears: attempt 1 embeds it but writes none of its points and no checkpoint, and
    exits 79 with the line that says why."""
    name = "fence-run-ckpt-0"
    _fenced_cm(core_v1, namespace, name)
    _raise_fence(k8s_api, namespace, name, 1)
    src = tmp_path / "src"
    src.mkdir()
    (src / "first.md").write_text("# First\n\nSome text about memory and vectors.\n")
    args = _run_args(src, tmp_path / "q", f"{namespace}/{name}", "--follow", "--watch", "poll",
                     "--poll-interval", "0.5", "--checkpoint-interval", "600")  # fmt: skip
    p = subprocess.Popen(
        args,
        env=_importer_env(devcluster_kubeconfig, 1),
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def synced() -> Checkpoint | None:
            text = (_cm(core_v1, namespace, name).data or {}).get(CHECKPOINT_KEY)
            cp = Checkpoint.from_json(text) if text else None
            return cp if cp is not None and cp.synced and cp.files_done == 1 else None

        cp = wait_for(synced, 180, "attempt 1 caught up")
        _raise_fence(k8s_api, namespace, name, 2)
        before = _cm(core_v1, namespace, name).data[CHECKPOINT_KEY]
        # past the staleness bound of attempt 1's last fence check (its last checkpoint write)
        wait_for(
            lambda: (datetime.now(UTC) - cp.heartbeat.time).total_seconds() > FENCE_MAX_AGE + 0.5,
            10,
            "the fence check to be stale",
            0.1,
        )
        (src / "second.md").write_text("# Second\n\nA new file after the fence rose.\n")
        assert p.stderr is not None
        err = p.stderr.read()
        assert p.wait(timeout=120) == EXIT_SUPERSEDED, err
    finally:
        if p.poll() is None:
            p.kill()
    assert "attempt 1 superseded by attempt 2; stopping without writing" in err
    assert _cm(core_v1, namespace, name).data[CHECKPOINT_KEY] == before
    from importer.sink import open_sink

    sink = open_sink(None, None, str(tmp_path / "q"), "e2e", False, 0)
    try:
        sources = {pt.payload["source"] for pt in sink.scroll(False)}
    finally:
        sink.close()
    assert sources == {"first.md"}
