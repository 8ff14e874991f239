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

Embedded mode: "unreachable" is the embedded store (Qdrant Edge) held by another process,
which takes it between two planned rolls. The next pod waits with backoff instead of failing:
the import stays Running, Progressing/Waiting says the store is held, and once the other
process lets go the import finishes with nothing lost.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
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
    pod_log_files,
    qdrant_shim,
    share_tree,
    shared_dir,
    wait_phase,
)

from devcluster.testing import free_port, wait_for

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
            # the outage lasts until the importer has noticed it twice
            wait_for(
                lambda: _logs(namespace).count("unreachable") >= waits_before + 2,
                120,
                "the importer waiting for Qdrant again",
            )
            during = get_import(k8s_api, namespace, "srv")["status"]
            shim.start()
            outage = time.monotonic() - t
            st = wait_phase(k8s_api, namespace, "srv", ("Succeeded",), 600, op.tail)
        watcher.stop()
        waits_after = _logs(namespace).count("unreachable")
        points = shim.points("test")
    finally:
        shim.close()
    assert during["phase"] == "Running", during
    assert during["restarts"]["total"] == 0, during["restarts"]
    assert list(watcher.exit_codes.values()) == [0], watcher.exit_codes  # one pod, no restart
    assert st["restarts"]["total"] == 0
    assert shim.keys_seen == {key}
    assert key not in _logs(namespace)
    ref = lib.Workspace(tmp_path / "ref", src)
    r = ref.run("--batch-size", "4", "--threads", "1")
    assert r.returncode == 0, r.stderr
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

        def waiting() -> list[dict[str, Any]] | None:
            conds = _conditions(k8s_api, namespace, "w")
            p = next((c for c in conds if c["type"] == "Progressing"), {})
            return conds if p.get("reason") == "Waiting" else None

        conds = wait_for(waiting, 60, "the Progressing condition saying Waiting", interval=1)
    progressing = next(c for c in conds if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "Waiting"), conds
    assert "qdrant" in progressing["message"].lower(), conds
    assert "unreachable" in progressing["message"], conds


def test_embedded_store_held_by_another_process_waits_then_resumes(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    src = _src(tmp_path)
    q = shared_dir(tmp_path / "qdrant")
    watcher = PodWatcher(k8s_api, namespace).start()
    holder: subprocess.Popen[str] | None = None
    with operator(namespace, tmp_path / "operator.log") as op:
        create_import(
            k8s_api,
            import_manifest(
                "emb",
                namespace,
                src,
                q,
                **{"memoryPolicy.recycleEveryFiles": 3},
            ),
        )
        wait_for(
            lambda: _counts(k8s_api, namespace).get("chunks", 0) > 0,
            300,
            "the first pod importing",
            0.2,
        )
        # another process takes the store the moment the first pod lets go
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(q / "test")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held"
            waiting = wait_for(
                lambda: _waiting(k8s_api, namespace),
                300,
                "the import saying that it waits for the store",
                0.5,
            )
            assert get_import(k8s_api, namespace, "emb")["status"]["phase"] == "Running"
        finally:
            holder.communicate("", timeout=60)  # let go
        st = wait_phase(k8s_api, namespace, "emb", ("Succeeded",), 600, op.tail)
    watcher.stop()
    ref = lib.Workspace(tmp_path / "ref", src)
    r = ref.run("--batch-size", "8", "--threads", "1")
    assert r.returncode == 0, r.stderr
    lib.assert_same_points(lib.read_points(q), ref.points())
    codes = watcher.exit_codes
    assert 78 not in codes.values(), codes
    assert not watcher.violations
    print(
        f"cluster, embedded store held: Progressing/Waiting ({waiting[:120]}), no failure; "
        f"exit codes {sorted(codes.values())}; {st['counts']['points']} points == reference"
    )


HOLD = """
import os, sys, qdrant_edge
while True:
    try:
        shard = qdrant_edge.EdgeShard.load(sys.argv[1])
        break
    except Exception:
        pass
print("held", flush=True)
sys.stdin.read()
shard.close()
for d, _, files in os.walk(sys.argv[1]):  # files it rewrote: back to the pods' user
    for f in [d, *(os.path.join(d, x) for x in files)]:
        os.chown(f, 65532, 65532)
"""


def _counts(k8s_api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return dict((get_import(k8s_api, namespace, "emb").get("status") or {}).get("counts") or {})


def _waiting(k8s_api: client.ApiClient, namespace: str) -> str | None:
    for c in _conditions(k8s_api, namespace, "emb"):
        held = "held by another process" in c.get("message", "")
        if c["type"] == "Progressing" and c.get("reason") == "Waiting" and held:
            return str(c["message"])
    return None
