"""The importer's ConfigMap checkpoint store against the real API server of the dev cluster.

The operator pre-creates the ConfigMap (owned by the EmbeddingImport); the importer only reads
and replaces it with the resourceVersion it read, merging on 409 Conflict so that the stored
checkpoint never goes backwards.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client

from eio_common.contract import CHECKPOINT_KEY, Checkpoint, Counters, Lag
from importer.checkpoint_store import ConfigMapStore

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent / "embedding-importer"


def _cm(core_v1: client.CoreV1Api, ns: str, name: str) -> client.V1ConfigMap:
    return core_v1.read_namespaced_config_map(name, ns)


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
    args = [
        str(BIN),
        "run",
        "--source",
        str(src),
        "--collection",
        "e2e",
        "--qdrant-path",
        str(tmp_path / "q"),
        "--checkpoint",
        f"configmap:{namespace}/{name}",
        "--recycle-every-files",
        "3",
    ]
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
