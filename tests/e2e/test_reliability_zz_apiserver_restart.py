"""The kube-apiserver restarted in the middle of an import.

(The file name sorts last among the reliability tests, so that in a full run the outage comes
after the others: every session using the cluster sees it.)

Only the API server is restarted (through the devcluster module's own stop/ensure functions,
under its lock, so a concurrent ``devcluster up`` of another session waits instead of racing);
etcd, the scheduler, the controller-manager and the node agent keep running. The outage is
kept short (SIGTERM, 3 s down, then the API server's own start-up), because other sessions
share the cluster. While the API is away the importer keeps embedding and retries its
checkpoint writes (back-off up to ~35 s); the operator's watches time out and reconnect
(kopf's watch timeouts are set, see docs/operations.md). Afterwards the import must Succeed
with the points of an uninterrupted run, the operator process must still be the same one, and
no restart may be counted that did not happen (only the planned rolls).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kubernetes import client
from reliability_helpers import (
    PodWatcher,
    create_import,
    get_import,
    import_manifest,
    importer_pid,
    importer_testlib,
    operator,
    share_tree,
    shared_dir,
    wait_phase,
)

from devcluster import cluster
from devcluster.config import paths, ports
from devcluster.testing import wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

lib = importer_testlib()
DOWN_SECONDS = 3.0


def restart_apiserver(down_seconds: float = DOWN_SECONDS) -> float:
    """Stop kube-apiserver, wait, start it again; return the seconds it did not answer."""
    p, pt = paths(), ports()
    with cluster._locked(p):
        t = time.monotonic()
        cluster._stop(p, "kube-apiserver")
        time.sleep(down_seconds)  # deliberate: the outage the operator and importers ride out
        cluster._ensure(
            p,
            "kube-apiserver",
            cluster.apiserver_argv,
            lambda: cluster.apiserver_ready(p, pt),
            pt.apiserver,
            120,
        )
        return time.monotonic() - t


def test_apiserver_restart_mid_import(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    src = shared_dir(tmp_path / "src")
    lib.make_corpus(
        tmp_path / "gen",
        seed=3,
        conversations=3,
        turns=16,
        jsonl_files=2,
        records=12,
        markdown=2,
        broken=False,
    )
    for f in (tmp_path / "gen" / "src").rglob("*"):
        if f.is_file():
            (src / f.name).write_bytes(f.read_bytes())
    share_tree(src)
    q = shared_dir(tmp_path / "qdrant")
    watcher = PodWatcher(k8s_api, namespace).start()
    with operator(namespace, tmp_path / "operator.log") as op:
        pid_before = op.proc.pid if op.proc else None
        create_import(
            k8s_api,
            import_manifest("api", namespace, src, q, **{"memoryPolicy.recycleEveryFiles": 2}),
        )

        def importing() -> bool:
            # a pod of the second attempt or later is running: a roll happened
            ps = core_v1.list_namespaced_pod(namespace, label_selector="eio.dev/import=api")
            return any(
                int(p.metadata.labels["eio.dev/attempt"]) >= 2 and importer_pid(p) for p in ps.items
            )

        wait_for(importing, 300, "a running importer pod after the first roll", 0.5)
        outage = restart_apiserver()
        assert op.alive(), op.tail()
        st = wait_phase(k8s_api, namespace, "api", ("Succeeded",), 600, op.tail)
        assert op.alive(), op.tail()
        assert op.proc is not None
        assert op.proc.pid == pid_before
        log = op.log()
    watcher.stop()
    pods = watcher.exit_codes
    assert set(pods.values()) <= {0, 75}, f"a pod failed around the outage: {pods}"
    assert (
        st["restarts"]["total"]
        == st["restarts"]["threshold"]
        == sum(c == 75 for c in pods.values())
    ), (st["restarts"], pods)
    assert not watcher.violations, watcher.violations
    ref = lib.Workspace(tmp_path / "ref", src)
    r = ref.run("--batch-size", "8", "--threads", "1")
    assert r.returncode == 0, r.stderr
    lib.assert_same_points(lib.read_points(q), ref.points())
    assert get_import(k8s_api, namespace, "api")["status"]["counts"]["filesDone"] == len(
        list(src.iterdir())
    )
    print(
        f"API server down {outage:.1f}s mid-import (pod running); import Succeeded with "
        f"{len(pods)} pods, restarts {st['restarts']}; operator pid unchanged; operator log "
        f"mentions {log.count('Timeout') + log.count('onnection')} connection/timeout lines"
    )
