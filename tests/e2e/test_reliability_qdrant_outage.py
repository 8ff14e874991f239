"""Qdrant unreachable for a while, on the dev cluster.

Server mode: the import's ``qdrant.url`` is a local port (pods share the host network here).
There is no Qdrant server binary on this machine, so the server is
``tests/reliability/qdrant_shim.py``: real HTTP and qdrant-client's models on both sides,
storage in qdrant-client's local mode -- NOT a real Qdrant. First nothing listens on the port
(connection refused), then the shim starts; later it stops again for a while in the middle of
the import and comes back. The importer must wait and resume by itself in the same pod (no
restart counted), the shim must end up with exactly the points of an uninterrupted run, and
every request must carry the API key from the Secret.

Whether the import's status says *why* it waits is checked separately
(``test_condition_says_the_importer_waits_for_qdrant``: Progressing/Waiting names Qdrant).

Embedded mode: "unreachable" is the embedded Qdrant directory locked by another process (the
test holds qdrant-client's lock file between two planned rolls). The importer exits 78, the
import fails with ConfigError and a message naming the lock; after the lock is released and
the spec is touched, it resumes from the checkpoint with nothing lost.
"""

from __future__ import annotations

import fcntl
import secrets
import time
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
    operator,
    patch_spec,
    pod_log_files,
    qdrant_shim,
    share_tree,
    shared_dir,
    wait_for,
    wait_phase,
)

from devcluster.testing import free_port

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

lib = importer_testlib()
CORPUS = {
    "seed": 21,
    "conversations": 3,
    "turns": 16,
    "jsonl_files": 2,
    "records": 12,
    "markdown": 2,
}


def _src(tmp_path: Path) -> Path:
    src = lib.make_corpus(shared_dir(tmp_path / "data"), **CORPUS)
    share_tree(src)
    return src


def _logs(namespace: str) -> str:
    return "".join(f.read_text(errors="replace") for f in pod_log_files(namespace))


def _conditions(api: client.ApiClient, ns: str, name: str) -> list[dict[str, Any]]:
    return list((get_import(api, ns, name).get("status") or {}).get("conditions") or [])


def _server_import(
    api: client.ApiClient, core: client.CoreV1Api, ns: str, src: Path, url: str, key: str, name: str
) -> None:
    core.create_namespaced_secret(
        ns,
        client.V1Secret(metadata=client.V1ObjectMeta(name="qdrant"), string_data={"api-key": key}),
    )
    create_import(
        api,
        import_manifest(
            name,
            ns,
            src,
            None,
            **{
                "qdrant.url": url,
                "qdrant.apiKeySecretRef": {"name": "qdrant", "key": "api-key"},
                "embedding.batchSize": 4,
                "importer.env": [
                    {"name": "IMPORTER_SORT_WINDOW", "value": "1"},
                    {"name": "IMPORTER_CHECKPOINT_INTERVAL", "value": "0.5"},
                ],
            },
        ),
    )


def test_server_refused_then_back_then_away_again_resumes_in_the_same_pod(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    src = _src(tmp_path)
    key = "shim-" + secrets.token_hex(12)
    port = free_port()
    shim = qdrant_shim().QdrantShim(port, tmp_path / "server-storage", api_key=key)
    watcher = PodWatcher(k8s_api, namespace).start()
    try:
        with operator(namespace, tmp_path / "operator.log") as op:
            _server_import(k8s_api, core_v1, namespace, src, shim.url, key, "srv")
            # 1. nothing listens: the importer says why it waits
            wait_for(
                lambda: _logs(namespace).count("unreachable") >= 2,
                240,
                "the importer waiting for Qdrant",
            )
            waiting_conditions = _conditions(k8s_api, namespace, "srv")
            shim.start()
            # 2. some progress, then the server goes away for ~12 s
            wait_for(lambda: shim.upserted >= 20, 300, "points in the server", 0.5)
            cp_before = (get_import(k8s_api, namespace, "srv").get("status") or {}).get(
                "counts", {}
            )
            shim.stop()
            waits_before = _logs(namespace).count("unreachable")
            t = time.monotonic()
            time.sleep(12)
            during = get_import(k8s_api, namespace, "srv")["status"]
            shim.start()
            outage = time.monotonic() - t
            st = wait_phase(k8s_api, namespace, "srv", ("Succeeded",), 600, op.tail)
        watcher.stop()
        waits_after = _logs(namespace).count("unreachable")
    finally:
        shim.close()
    assert waits_after > waits_before, "the importer did not report the second outage"
    assert during["phase"] == "Running", during
    assert during["restarts"]["total"] == 0, during["restarts"]
    assert list(watcher.exit_codes.values()) == [0], watcher.exit_codes  # one pod, no restart
    assert st["restarts"]["total"] == 0
    assert shim.keys_seen == {key}
    assert key not in _logs(namespace)
    ref = lib.Workspace(tmp_path / "ref", src)
    r = ref.run("--batch-size", "4", "--threads", "1")
    assert r.returncode == 0, r.stderr
    points = lib.read_points(tmp_path / "server-storage")
    lib.assert_same_points(points, ref.points())
    assert st["counts"]["points"] >= len(points)
    print(
        f"cluster, server mode: refused at start, then {outage:.0f}s away mid-import "
        f"(counts before {cp_before}); one pod, no restart; {len(points)} points == reference;"
        f" {waits_after} wait lines logged; conditions while waiting: "
        f"{[(c['type'], c['reason'], c['message']) for c in waiting_conditions]}"
    )


def test_condition_says_the_importer_waits_for_qdrant(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    src = _src(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    with operator(namespace, tmp_path / "operator.log"):
        _server_import(k8s_api, core_v1, namespace, src, url, "k-" + secrets.token_hex(8), "w")
        wait_for(
            lambda: _logs(namespace).count("unreachable") >= 3,
            240,
            "the importer waiting for Qdrant",
        )
        time.sleep(6)  # a few backstop ticks
        conds = _conditions(k8s_api, namespace, "w")
    progressing = next(c for c in conds if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "Waiting"), conds
    assert "qdrant" in progressing["message"].lower(), conds
    assert "unreachable" in progressing["message"], conds


def test_embedded_directory_locked_fails_with_reason_then_resumes(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    src = _src(tmp_path)
    q = shared_dir(tmp_path / "qdrant")
    watcher = PodWatcher(k8s_api, namespace).start()
    with operator(namespace, tmp_path / "operator.log") as op:
        create_import(
            k8s_api,
            import_manifest(
                "emb",
                namespace,
                src,
                q,
                **{"memoryPolicy.recycleEveryFiles": 3, "memoryPolicy.retryBudget": 0},
            ),
        )
        # take qdrant-client's lock the moment the first pod releases it (at its exit 75, after
        # 3 files): wait until it works (it holds the lock), then spin on the lock
        lock_path = q / ".lock"
        wait_for(
            lambda: (
                (
                    (get_import(k8s_api, namespace, "emb").get("status") or {}).get("counts") or {}
                ).get("chunks", 0)
                > 0
            ),
            300,
            "the first pod importing",
            0.2,
        )
        lock = open(lock_path, "r+")  # noqa: SIM115
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    assert time.monotonic() < deadline, "never got the lock"
                    time.sleep(0.01)
            st = wait_phase(k8s_api, namespace, "emb", ("Failed",), 300, op.tail, fail_on=())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()
        progress_at_failure = st["counts"]
        succeeded = next(c for c in st["conditions"] if c["type"] == "Succeeded")
        assert (succeeded["status"], succeeded["reason"]) == ("False", "ConfigError"), succeeded
        # the cause: in the pod's log, and in the condition (terminationMessagePolicy
        # FallbackToLogsOnError carries the importer's last line into the pod status)
        assert "already accessed by another instance" in _logs(namespace), _logs(namespace)[-800:]
        assert "embedded Qdrant" in succeeded["message"], succeeded
        assert progress_at_failure["filesDone"] >= 3
        # released: any spec change retries from the checkpoint
        patch_spec(k8s_api, namespace, "emb", {"memoryPolicy": {"retryBudget": 1}})
        st = wait_phase(k8s_api, namespace, "emb", ("Succeeded",), 600, op.tail, fail_on=())
    watcher.stop()
    ref = lib.Workspace(tmp_path / "ref", src)
    r = ref.run("--batch-size", "8", "--threads", "1")
    assert r.returncode == 0, r.stderr
    lib.assert_same_points(lib.read_points(q), ref.points())
    codes = watcher.exit_codes
    assert 78 in codes.values(), codes
    assert not watcher.violations
    print(
        f"cluster, embedded lock held: Failed/ConfigError ({succeeded['message'][:120]}) with "
        f"{progress_at_failure['filesDone']} files kept; resumed after a spec change; exit "
        f"codes {sorted(codes.values())}; points == reference"
    )
