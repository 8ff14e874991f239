"""409 Conflicts against the real API server: checkpoint writes and status writes by two
writers at once.

Checkpoints: two importer ``ConfigMapStore``s (as a stale pod and its successor would) write
the same checkpoint ConfigMap as fast as they can, while ``kubectl patch`` adds other data keys
to it; a watch records every stored version. No stored version may go backwards (counters,
completion), no write may be lost (every kubectl key survives, the final checkpoint holds both
writers' counts), and conflicts must really have happened.

Status: several operator reconciles (separate ``Context``s, so no shared lock, as with two
operator replicas) race on the same import after each importer pod ends. Exactly one of them
may count the ending: ``status.restarts`` must equal the number of pods that exited 75, and
the attempts must be 1, 2, 3 ... with no pod created twice.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from reliability_helpers import (
    create_import,
    get_import,
    import_manifest,
    share_tree,
    shared_dir,
)

from devcluster.config import paths
from devcluster.testing import wait_for
from eio_common.contract import CHECKPOINT_KEY, Checkpoint
from importer.checkpoint_store import ConfigMapStore

pytestmark = [pytest.mark.reliability]

FILES = 40


def _versions(
    core: client.CoreV1Api,
    ns: str,
    name: str,
    out: list[Checkpoint],
    stop: threading.Event,
    rv: str,
    last_rv: list[str],
) -> None:
    """Record every checkpoint version the API server stored; ``last_rv[0]``: the newest seen."""
    w = watch.Watch()
    while not stop.is_set():
        for ev in w.stream(
            core.list_namespaced_config_map,
            ns,
            field_selector=f"metadata.name={name}",
            resource_version=rv,
            timeout_seconds=2,
        ):
            cm = ev["object"]
            rv = last_rv[0] = cm.metadata.resource_version
            text = (cm.data or {}).get(CHECKPOINT_KEY)
            if text:
                out.append(Checkpoint.from_json(text))


def _writer(store: ConfigMapStore, steps: int, tag: int, errors: list[str]) -> None:
    """Count through the files: ``steps - 1`` chunk writes inside each file, then the file."""
    cp = Checkpoint(files_total=FILES, attempt=tag)
    try:
        for _ in range(FILES):
            for _ in range(1, steps):
                cp = cp.model_copy(deep=True)
                cp.counters.records += 1
                cp.counters.chunks += 1
                cp = store.save(cp)
            cp = cp.model_copy(deep=True)
            cp.counters.files += 1
            cp.complete = cp.counters.files >= FILES
            cp = store.save(cp)
    except Exception as e:  # reported by the test
        errors.append(f"writer {tag}: {type(e).__name__}: {e}")


def _count_conflicts(store: ConfigMapStore) -> list[int]:
    seen = [0]
    real = store.api.replace_namespaced_config_map

    def counting(*a: Any, **kw: Any) -> Any:
        try:
            return real(*a, **kw)
        except client.ApiException as e:
            if e.status == 409:
                seen[0] += 1
            raise

    store.api.replace_namespaced_config_map = counting
    return seen


def test_two_checkpoint_writers_and_kubectl_never_lose_or_rewind(
    core_v1: client.CoreV1Api, namespace: str, devcluster_kubeconfig: Path
) -> None:
    name = "race-ckpt-0"
    created = core_v1.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name, labels={"eio.dev/import": "race"}),
            data={"note": "operator"},
        ),
    )
    versions: list[Checkpoint] = []
    last_rv = [created.metadata.resource_version]
    stop = threading.Event()
    observer = threading.Thread(
        target=_versions,
        daemon=True,
        args=(core_v1, namespace, name, versions, stop, last_rv[0], last_rv),
    )
    observer.start()
    a, b = ConfigMapStore(namespace, name), ConfigMapStore(namespace, name)
    conflicts = [_count_conflicts(a), _count_conflicts(b)]
    errors: list[str] = []
    # A walks the files forwards, B (a stale pod, slower: more steps per file) from the middle
    ta = threading.Thread(target=_writer, args=(a, 3, 1, errors))
    tb = threading.Thread(target=_writer, args=(b, 4, 2, errors))
    notes: list[str] = []

    def kubectl_patches() -> None:
        k = 0
        while ta.is_alive() or tb.is_alive():
            key = f"kubectl-{k}"
            out = subprocess.run(
                [
                    str(paths().bin / "kubectl"),
                    "patch",
                    "configmap",
                    name,
                    "-n",
                    namespace,
                    "--type",
                    "merge",
                    "-p",
                    json.dumps({"data": {key: str(k)}}),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if out.returncode == 0:
                notes.append(key)
            k += 1

    t = time.monotonic()
    ta.start()
    tb.start()
    tk = threading.Thread(target=kubectl_patches)
    tk.start()
    for th in (ta, tb, tk):
        th.join(600)
    seconds = time.monotonic() - t
    cm = core_v1.read_namespaced_config_map(name, namespace)
    final_rv = cm.metadata.resource_version
    wait_for(lambda: last_rv[0] == final_rv, 60, "the observer seeing the last version")
    stop.set()
    observer.join(10)
    assert not errors, errors
    final = Checkpoint.from_json(cm.data[CHECKPOINT_KEY])
    assert final.complete
    assert final.counters.files >= FILES
    assert final.counters.chunks >= FILES * 3  # the slower writer's own count at least
    assert cm.data["note"] == "operator"
    lost = [k for k in notes if k not in cm.data]
    assert not lost, f"kubectl writes lost: {lost}"
    assert cm.metadata.labels == {"eio.dev/import": "race"}
    # never backwards, in any version the API server stored
    backwards = []
    for prev, cur in itertools.pairwise(versions):
        pc, cc = prev.counters, cur.counters
        for what in ("files", "records", "chunks"):
            if getattr(cc, what) < getattr(pc, what):
                backwards.append(f"{what} {getattr(pc, what)} -> {getattr(cc, what)}")
        if prev.complete and not cur.complete:
            backwards.append("complete -> not complete")
    assert not backwards, backwards[:10]
    n_conflicts = conflicts[0][0] + conflicts[1][0]
    print(
        f"checkpoint race: {len(versions)} stored versions, {n_conflicts} conflicts (409) "
        f"retried, {len(notes)} kubectl patches kept, none backwards, in {seconds:.1f}s"
    )
    assert n_conflicts >= 5, "the writers did not really conflict"
    assert len(versions) > FILES


# --------------------------------------------------------------------------------------------
RECONCILERS = 4


def test_racing_reconciles_count_each_ending_once(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    from eio_operator.kube import RestKube
    from eio_operator.reconcile import Context, reconcile
    from eio_operator.settings import OperatorSettings

    src = shared_dir(tmp_path / "src")
    for i in range(3):
        (src / f"doc-{i}.md").write_text(f"# Doc {i}\n\nWords about vectors {i}.\n")
    share_tree(src)
    q = shared_dir(tmp_path / "qdrant")
    create_import(
        k8s_api, import_manifest("race", namespace, src, q, **{"memoryPolicy.recycleEveryFiles": 1})
    )
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def sink(body: Any, type: str, reason: str, message: str) -> None:
        with lock:
            events.append((reason, message))

    settings = OperatorSettings()
    contexts = [
        Context(settings=settings, kube=RestKube(k8s_api), events=sink) for _ in range(RECONCILERS)
    ]
    gave_up: list[BaseException] = []  # reconciles that still conflicted after their retries

    def race() -> None:
        barrier = threading.Barrier(RECONCILERS)
        errs: list[BaseException] = []

        def one(ctx: Context) -> None:
            barrier.wait()
            try:
                reconcile(ctx, namespace, "race")
            except Exception as e:  # a reconcile that gave up after its retries
                errs.append(e)

        threads = [threading.Thread(target=one, args=(c,)) for c in contexts]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        gave_up.extend(errs)

    def pods() -> list[Any]:
        return core_v1.list_namespaced_pod(namespace, label_selector="eio.dev/import=race").items

    race()  # the first round creates the first pod
    t = time.monotonic()
    rounds = 0
    while time.monotonic() - t < 600:
        st = get_import(k8s_api, namespace, "race").get("status") or {}
        if st.get("phase") == "Succeeded":
            break

        # wait for the newest pod to end, then let the reconcilers race on it
        def newest_ended() -> bool:
            ps = pods()
            if not ps:
                return False
            newest = max(ps, key=lambda p: int(p.metadata.labels["eio.dev/attempt"]))
            return newest.status.phase in ("Succeeded", "Failed")

        wait_for(newest_ended, 300, "the newest importer pod to end")
        race()
        rounds += 1
    st = get_import(k8s_api, namespace, "race")["status"]
    all_pods = pods()
    names = sorted(p.metadata.name for p in all_pods)
    codes = {
        p.metadata.name: p.status.container_statuses[0].state.terminated.exit_code
        for p in all_pods
        if p.status.container_statuses and p.status.container_statuses[0].state.terminated
    }
    print(
        f"status race: {rounds} rounds of {RECONCILERS} racing reconciles, pods {names}, "
        f"exit codes {codes}, restarts {st['restarts']}, {len(gave_up)} reconciles gave up "
        "on a 409 after their in-place retries (kopf retries those)"
    )
    assert st["phase"] == "Succeeded", st
    # keepTerminatedPods (2) may have pruned the oldest pods: the attempts tell
    attempts = sorted(int(p.metadata.labels["eio.dev/attempt"]) for p in all_pods)
    assert attempts == list(range(attempts[0], attempts[-1] + 1)), attempts
    last = st["shards"][0]["attempt"]
    assert last == attempts[-1]
    # every ending before the last was one planned roll, counted once
    assert st["restarts"]["threshold"] == last - 1, st["restarts"]
    assert st["restarts"]["total"] == last - 1, st["restarts"]
    assert sum(r == "Threshold" for r, _ in events) == last - 1, events
    assert sum(r == "Completed" for r, _ in events) == 1, events
    assert st["counts"]["filesDone"] == 3
    # a reconcile that loses the race 3 times in a row raises ApiError(409), which the kopf
    # handler turns into a TemporaryError (retried): nothing else may escape
    from eio_operator.kube import ApiError

    assert all(isinstance(e, ApiError) and e.status == 409 and e.transient for e in gave_up), (
        gave_up
    )
