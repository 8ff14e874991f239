"""Handlers and the reconcile loop against an injected in-memory fake of the API (no cluster).

The fake plays the API server (objects, resourceVersions, 409/404); the tests play the kubelet
(pod states) and the importer (checkpoints). Everything else is the operator's real code.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

import kopf
import prometheus_client
import pytest
from eio_operator import handlers, metrics
from eio_operator.kube import ApiError
from eio_operator.models import EmbeddingImportStatus, ImportPhase, InvalidSpecError
from eio_operator.reconcile import Context, reconcile
from eio_operator.settings import OperatorSettings
from operator_testlib import (
    NAME,
    NAMESPACE,
    NOW,
    UID,
    Events,
    FakeKube,
    checkpoint,
    following,
    import_body,
    set_pod_state,
    write_checkpoint,
)

from eio_common import contract


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


World = tuple[FakeKube, Events, Clock, Context]


@pytest.fixture
def world() -> World:
    kube, events, clock = FakeKube(), Events(), Clock()
    ctx = Context(settings=OperatorSettings(), kube=kube, events=events, clock=clock)
    return kube, events, clock, ctx


def status(kube: FakeKube, name: str = NAME) -> EmbeddingImportStatus:
    body = kube.get("EmbeddingImport", name)
    assert body is not None
    return EmbeddingImportStatus.model_validate(body.get("status") or {})


def conds(st: EmbeddingImportStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in st.conditions}


def pod_env(kube: FakeKube, name: str) -> dict[str, Any]:
    pod = kube.get("Pod", name)
    assert pod is not None
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def set_spec(kube: FakeKube, **patch: Any) -> None:
    body = kube.objects[("EmbeddingImport", NAMESPACE, NAME)]
    fresh = import_body(**patch)
    body["spec"] = fresh["spec"]
    body["metadata"]["generation"] += 1
    kube.bump("EmbeddingImport", NAME)


def test_a_disruption_budget_is_created_with_the_first_pods_only_when_asked(world: World) -> None:
    kube, _, _, ctx = world
    kube.put(import_body(**{"importer.podDisruptionBudget": {"maxUnavailable": 0}}))
    reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [f"{NAME}-s0-a1"]
    pdb = kube.get("PodDisruptionBudget", f"{NAME}-importer")
    assert pdb is not None
    assert pdb["spec"]["maxUnavailable"] == 0
    assert pdb["metadata"]["ownerReferences"][0]["uid"] == UID
    # a changed budget applies with the next pod: the existing object is patched
    set_spec(kube, **{"importer.podDisruptionBudget": {"maxUnavailable": 1}})
    kube.objects.pop(("Pod", NAMESPACE, f"{NAME}-s0-a1"))  # lost before it ran: made again
    reconcile(ctx, NAMESPACE, NAME)
    assert ("create", "Pod", f"{NAME}-s0-a1") in kube.calls[-3:]
    assert ("patch_budget", f"{NAME}-importer") in kube.calls
    pdb = kube.get("PodDisruptionBudget", f"{NAME}-importer")
    assert pdb is not None
    assert pdb["spec"]["maxUnavailable"] == 1
    kube.objects.clear()
    kube.put(import_body())
    reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [f"{NAME}-s0-a1"]
    assert kube.names("PodDisruptionBudget") == []


def test_create_starts_one_pod_per_shard_with_children_owned(world: World) -> None:
    kube, events, _, ctx = world
    kube.put(import_body(**{"parallelism.shards": 2}))
    result = reconcile(ctx, NAMESPACE, NAME)
    assert result.status_written
    assert kube.names("ConfigMap") == [f"{NAME}-ckpt-0", f"{NAME}-ckpt-1"]
    assert kube.names("Pod") == [f"{NAME}-s0-a1", f"{NAME}-s1-a1"]
    assert kube.names("ServiceAccount") == [f"{NAME}-importer"]
    assert kube.names("Role") == kube.names("RoleBinding") == [f"{NAME}-importer"]
    assert kube.names("Service") == [f"{NAME}-reads", f"{NAME}-reads-0", f"{NAME}-reads-1"]
    for kind in ("ConfigMap", "Pod", "ServiceAccount", "Role", "RoleBinding", "Service"):
        for (k, _, _), obj in kube.objects.items():
            if k == kind:
                assert obj["metadata"]["ownerReferences"][0]["uid"] == UID
    env = pod_env(kube, f"{NAME}-s1-a1")
    assert env["IMPORTER_SHARD"] == "1/2"
    assert env["IMPORTER_CHECKPOINT"] == f"configmap:{NAMESPACE}/{NAME}-ckpt-1"
    assert env["IMPORTER_QDRANT_PATH"] == "/data/qdrant/shard-1"
    # a read of shard 1's store fans out to shard 0's read API, by its Service's cluster IP
    ip0 = (kube.get("Service", f"{NAME}-reads-0") or {})["spec"]["clusterIP"]
    assert env["IMPORTER_READ_PEERS"] == f"http://{ip0}:6333"
    assert env["IMPORTER_READ_ADDRESS"] == "0.0.0.0:6333"
    st = status(kube)
    assert st.read_service == f"{NAME}-reads"
    assert st.observed_generation == 1
    assert st.phase == "Pending"
    assert st.current_pods == [f"{NAME}-s0-a1", f"{NAME}-s1-a1"]
    assert [r.name for r in st.checkpoint_refs] == [f"{NAME}-ckpt-0", f"{NAME}-ckpt-1"]
    assert events.reasons() == ["Started", "Started"]


def test_reconcile_is_idempotent(world: World) -> None:
    kube, events, _, ctx = world
    kube.put(import_body())
    reconcile(ctx, NAMESPACE, NAME)
    set_pod_state(kube, f"{NAME}-s0-a1")
    reconcile(ctx, NAMESPACE, NAME)
    assert status(kube).phase == "Running"
    assert status(kube).shards[0].pod_uid
    kube.calls.clear()
    again = reconcile(ctx, NAMESPACE, NAME)
    assert not again.status_written
    assert [c[0] for c in kube.calls] == ["get_import", "list_configmaps", "list_pods"]
    assert events.reasons() == ["Started"]


def test_planned_roll_then_completion(world: World) -> None:
    kube, events, clock, ctx = world
    kube.put(import_body(**{"memoryPolicy.recycleEveryFiles": 5}))
    reconcile(ctx, NAMESPACE, NAME)
    a1 = f"{NAME}-s0-a1"
    set_pod_state(kube, a1)
    write_checkpoint(kube, 0, checkpoint(5, total=10, attempt=1, hb_pod=a1, points=50))
    set_pod_state(kube, a1, exit_code=75)
    before = metrics.RESTARTS_TOTAL.labels(reason="threshold")._value.get()
    reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [a1, f"{NAME}-s0-a2"]
    st = status(kube)
    assert (st.restarts.total, st.restarts.threshold) == (1, 1)
    assert st.last_restart is not None
    assert (st.last_restart.reason, st.last_restart.pod) == ("Threshold", a1)
    assert st.progress == "5/10 (50%)"
    assert pod_env(kube, f"{NAME}-s0-a2")["IMPORTER_ATTEMPT"] == "2"
    assert metrics.RESTARTS_TOTAL.labels(reason="threshold")._value.get() == before + 1
    assert events.posted[-1][:2] == ("Normal", "Threshold")

    clock.advance(60)
    a2 = f"{NAME}-s0-a2"
    set_pod_state(kube, a2)
    write_checkpoint(
        kube, 0, checkpoint(10, total=10, attempt=2, hb_pod=a2, complete=True, points=100)
    )
    set_pod_state(kube, a2, exit_code=0)
    reconcile(ctx, NAMESPACE, NAME)
    st = status(kube)
    assert st.phase == "Succeeded"
    assert conds(st)["Succeeded"] == ("True", "Completed")
    assert st.progress == "10/10 (100%)"
    assert st.counts.points == 100
    assert st.current_pods == []
    assert kube.names("Pod") == [a1, a2]  # kept for their logs (keepTerminatedPods 2)
    assert events.reasons()[-1] == "Completed"


def test_repeated_oom_without_progress_grows_the_limit(world: World) -> None:
    kube, events, _, ctx = world
    kube.put(import_body())
    reconcile(ctx, NAMESPACE, NAME)
    for attempt in (1, 2):
        pod = f"{NAME}-s0-a{attempt}"
        set_pod_state(kube, pod)
        reconcile(ctx, NAMESPACE, NAME)
        set_pod_state(kube, pod, exit_code=137, reason="OOMKilled")
        reconcile(ctx, NAMESPACE, NAME)
    a3 = kube.get("Pod", f"{NAME}-s0-a3")
    assert a3 is not None
    assert a3["spec"]["containers"][0]["resources"]["limits"]["memory"] == "1536Mi"
    st = status(kube)
    assert st.restarts.oom_killed == 2
    assert st.shards[0].memory_limit == "1536Mi"
    assert st.shards[0].ooms_without_progress == 0
    assert "MemoryLimitRaised" in events.reasons()
    # keepTerminatedPods: 2 terminated pods are kept beside the live one
    assert kube.names("Pod") == [f"{NAME}-s0-a1", f"{NAME}-s0-a2", f"{NAME}-s0-a3"]


def test_crash_backs_off_until_the_timer_sees_it_expire(world: World) -> None:
    kube, _, clock, ctx = world
    kube.put(import_body())
    reconcile(ctx, NAMESPACE, NAME)
    set_pod_state(kube, f"{NAME}-s0-a1", exit_code=1)
    result = reconcile(ctx, NAMESPACE, NAME)
    assert result.requeue_after == 10
    assert status(kube).shards[0].phase == "BackingOff"
    assert conds(status(kube))["Degraded"] == ("True", "RetryingWithoutProgress")
    assert kube.names("Pod") == [f"{NAME}-s0-a1"]
    clock.advance(11)
    reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [f"{NAME}-s0-a1", f"{NAME}-s0-a2"]


def test_config_error_fails_the_import_and_stops_other_shards(world: World) -> None:
    kube, events, _, ctx = world
    kube.put(import_body(**{"parallelism.shards": 2}))
    reconcile(ctx, NAMESPACE, NAME)
    set_pod_state(kube, f"{NAME}-s1-a1")
    set_pod_state(kube, f"{NAME}-s0-a1", exit_code=78)
    reconcile(ctx, NAMESPACE, NAME)
    st = status(kube)
    assert st.phase == "Failed"
    assert conds(st)["Succeeded"] == ("False", "ConfigError")
    assert [s.phase for s in st.shards] == ["Failed", "Stopped"]
    assert kube.get("Pod", f"{NAME}-s1-a1") is None  # deleted (checkpoint kept)
    assert kube.get("ConfigMap", f"{NAME}-ckpt-1") is not None
    assert {"ConfigError", "Stopped"} <= set(events.reasons())
    # Nothing restarts while the spec stays the same ...
    reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [f"{NAME}-s0-a1"]
    # ... and a spec change retries both shards from their checkpoints.
    set_spec(kube, **{"parallelism.shards": 2, "sources.format": "jsonl"})
    reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [f"{NAME}-s0-a1", f"{NAME}-s0-a2", f"{NAME}-s1-a2"]
    assert status(kube).phase == "Pending"


def test_suspend_and_resume(world: World) -> None:
    kube, events, _, ctx = world
    kube.put(import_body())
    reconcile(ctx, NAMESPACE, NAME)
    set_pod_state(kube, f"{NAME}-s0-a1")
    set_spec(kube, suspend=True)
    reconcile(ctx, NAMESPACE, NAME)
    st = status(kube)
    assert st.phase == "Suspended"
    assert kube.names("Pod") == []
    assert kube.names("ConfigMap") == [f"{NAME}-ckpt-0"]
    assert st.restarts.total == 0
    set_spec(kube, suspend=False)
    reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [f"{NAME}-s0-a2"]
    assert events.reasons() == ["Started", "Suspended", "Resumed"]


def test_invalid_spec_is_reported_once_and_fails_permanently(world: World) -> None:
    kube, events, _, ctx = world
    kube.put(import_body(**{"embedding.batchSize": -1}))
    memo = kopf.Memo(eio=ctx)
    with pytest.raises(kopf.PermanentError, match="batchSize"):
        handlers.on_import_change(namespace=NAMESPACE, name=NAME, memo=memo)
    st = status(kube)
    assert st.phase == "Invalid"
    assert conds(st)["Degraded"] == ("True", "InvalidSpec")
    assert events.posted == [
        (
            "Warning",
            "InvalidSpec",
            "spec.embedding.batchSize: Input should be greater than or equal to 1",
        )
    ]
    # The resync does not raise and does not post again.
    handlers.resync(ctx, NAMESPACE, NAME, {}, {})
    assert len(events.posted) == 1
    assert kube.names("Pod") == []
    # Fixing the spec recovers.
    set_spec(kube)
    handlers.on_import_change(namespace=NAMESPACE, name=NAME, memo=memo)
    assert conds(status(kube))["Degraded"] == ("False", "AsExpected")
    assert kube.names("Pod") == [f"{NAME}-s0-a1"]


def test_shard_count_cannot_change_even_without_cel(world: World) -> None:
    kube, _, _, ctx = world
    kube.put(import_body())
    reconcile(ctx, NAMESPACE, NAME)
    set_spec(kube, **{"parallelism.shards": 3})
    with pytest.raises(InvalidSpecError, match="immutable"):
        reconcile(ctx, NAMESPACE, NAME)


def test_status_conflict_is_retried_at_once(world: World) -> None:
    kube, _, _, ctx = world
    kube.put(import_body())
    real_get = kube.get_import
    conflicts = [1]

    def stale_once(namespace: str, name: str) -> dict[str, Any] | None:
        body = real_get(namespace, name)
        if conflicts:
            conflicts.pop()
            kube.bump("EmbeddingImport", name)  # kopf patches its annotations in between
        return body

    kube.get_import = stale_once  # type: ignore[method-assign]
    reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [f"{NAME}-s0-a1"]
    assert [c[0] for c in kube.calls].count("patch_status") == 2


def test_persistent_status_conflict_is_a_temporary_error(world: World) -> None:
    kube, _, _, ctx = world
    kube.put(import_body())
    real_get = kube.get_import

    def stale_get(namespace: str, name: str) -> dict[str, Any] | None:
        body = real_get(namespace, name)
        kube.bump("EmbeddingImport", name)  # someone writes between our read and our patch
        return body

    kube.get_import = stale_get  # type: ignore[method-assign]
    with pytest.raises(kopf.TemporaryError):
        handlers.on_import_change(namespace=NAMESPACE, name=NAME, memo=kopf.Memo(eio=ctx))
    assert kube.names("Pod") == []  # nothing acted on without a written status


def test_lost_pod_create_is_repaired_without_counting(world: World) -> None:
    kube, events, _, ctx = world
    kube.put(import_body())
    kube.fail_next_create = ApiError(503, "apiserver restarting")
    with pytest.raises(ApiError):
        reconcile(ctx, NAMESPACE, NAME)
    assert status(kube).shards[0].attempt == 1
    assert kube.names("Pod") == []
    assert events.reasons() == ["PodCreateFailed"]
    reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [f"{NAME}-s0-a1"]
    assert status(kube).restarts.total == 0


def test_never_two_live_pods_while_a_killed_pod_terminates(world: World) -> None:
    kube, events, clock, ctx = world
    kube.graceful_delete = True
    kube.put(import_body())
    reconcile(ctx, NAMESPACE, NAME)
    a1 = f"{NAME}-s0-a1"
    set_pod_state(kube, a1)
    write_checkpoint(kube, 0, checkpoint(1, attempt=1, hb_pod=a1, hb_ago=0))
    clock.advance(400)  # heartbeat older than stallSeconds (300)
    reconcile(ctx, NAMESPACE, NAME)
    pod = kube.get("Pod", a1)
    assert pod is not None
    assert pod["metadata"].get("deletionTimestamp")
    assert status(kube).restarts.stalled == 1
    assert events.reasons()[-1] == "Stalled"
    clock.advance(20)
    reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [a1]  # still terminating: no second pod
    set_pod_state(kube, a1, exit_code=143)
    reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [a1, f"{NAME}-s0-a2"]
    assert status(kube).restarts.total == 1  # the kill was counted once


def test_pod_event_triggers_the_owners_reconcile(world: World) -> None:
    kube, _, _, ctx = world
    kube.put(import_body())
    memo = kopf.Memo(eio=ctx)
    pod = {
        "metadata": {
            "name": f"{NAME}-s0-a1",
            "ownerReferences": [
                {"apiVersion": "eio.dev/v1alpha1", "kind": "EmbeddingImport", "name": NAME}
            ],
        }
    }
    handlers.on_pod_event(event={"type": None}, body=pod, namespace=NAMESPACE, memo=memo)
    assert kube.names("Pod") == []  # the initial listing is left to resume and the timer
    handlers.on_pod_event(event={"type": "MODIFIED"}, body=pod, namespace=NAMESPACE, memo=memo)
    assert kube.names("Pod") == [f"{NAME}-s0-a1"]
    stranger = {"metadata": {"name": "x", "ownerReferences": [{"kind": "Job", "name": NAME}]}}
    kube.calls.clear()
    handlers.on_pod_event(event={"type": "DELETED"}, body=stranger, namespace=NAMESPACE, memo=memo)
    assert kube.calls == []


def test_resync_loop_reconciles_every_listed_import(world: World) -> None:
    # The resync loop (not a kopf timer: that would add a finalizer) lists the imports and
    # reconciles the unfinished ones: here a fresh import gets its first pod from it alone.
    kube, _, _, ctx = world
    kube.put(import_body())

    async def run_briefly() -> None:
        task = asyncio.create_task(handlers.resync_loop(ctx, 0.01))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if kube.names("Pod"):
                break
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run_briefly())
    assert ("list_imports", "") in kube.calls
    assert kube.names("Pod") == [contract.pod_name(NAME, 0, 1)]


def test_resync_skips_finished_imports(world: World) -> None:
    kube, _, _, ctx = world
    kube.put(import_body())
    handlers.resync(
        ctx, NAMESPACE, NAME, {"phase": "Succeeded", "observedGeneration": 1}, {"generation": 1}
    )
    assert kube.calls == []


def test_deleted_import_is_a_no_op(world: World) -> None:
    _, _, _, ctx = world
    assert reconcile(ctx, NAMESPACE, "gone").phase is None


def gauge(name: str, **labels: str) -> float | None:
    return prometheus_client.REGISTRY.get_sample_value(name, labels)


def test_a_deleted_import_leaves_no_state_behind(world: World) -> None:
    """The soak's leak: per-import locks, gauges and reported problems outlived the import."""
    kube, _, _, ctx = world
    names = [f"{NAME}-{i}" for i in range(3)]
    for name in names:
        kube.put(import_body(name))
        reconcile(ctx, NAMESPACE, name)
        cm = kube.objects[("ConfigMap", NAMESPACE, f"{name}-ckpt-0")]
        cm["data"] = {"checkpoint.json": "{not json"}  # a problem reported (and remembered)
        reconcile(ctx, NAMESPACE, name)
    assert ctx.remembered() == 3
    assert gauge("eio_operator_active_imports") == 3
    assert gauge("eio_operator_pods", phase="Pending") == 3  # one shard each
    # 1) the DELETED watch event (no finalizer: kopf calls no delete handler)
    del kube.objects[("EmbeddingImport", NAMESPACE, names[0])]
    handlers.on_import_event(
        event={"type": "DELETED"}, namespace=NAMESPACE, name=names[0], memo=kopf.Memo(eio=ctx)
    )
    handlers.on_import_event(
        event={"type": "MODIFIED"}, namespace=NAMESPACE, name=names[1], memo=kopf.Memo(eio=ctx)
    )
    assert ctx.remembered() == 2
    # 2) a reconcile (e.g. a pod's event) that finds the import gone
    del kube.objects[("EmbeddingImport", NAMESPACE, names[1])]
    assert reconcile(ctx, NAMESPACE, names[1]).phase is None
    assert ctx.remembered() == 1
    assert gauge("eio_operator_active_imports") == 1
    assert gauge("eio_operator_pods", phase="Pending") == 1


def test_foreign_checkpoint_configmap_blocks_the_pod(world: World) -> None:
    kube, events, _, ctx = world
    # A ConfigMap of an earlier import of the same name, not yet garbage-collected.
    kube.put(
        {
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{NAME}-ckpt-0",
                "namespace": NAMESPACE,
                "labels": {"eio.dev/import": NAME},
                "ownerReferences": [{"uid": "old-uid"}],
            },
            "data": {},
        }
    )
    kube.put(import_body())
    reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == []
    assert events.reasons() == []
    del kube.objects[("ConfigMap", NAMESPACE, f"{NAME}-ckpt-0")]
    reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [f"{NAME}-s0-a1"]


def test_registry_has_every_handler() -> None:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, OperatorSettings())
    changing = [(h.id, getattr(h, "reason", None)) for h in registry._changing.get_all_handlers()]
    assert [r for _, r in changing] == ["create", None, "update"]  # None: resume
    # No delete handler (without a finalizer kopf would never call it): the DELETED watch
    # event of an import drops the operator's state about it.
    assert [h.id for h in registry._watching.get_all_handlers()] == [
        "on_import_event",
        "on_pod_event",
    ]
    gone = next(h for h in registry._watching.get_all_handlers() if h.id == "on_import_event")
    assert gone.when is not None
    assert gone.when(event={"type": "DELETED"})
    assert not gone.when(event={"type": "MODIFIED"})
    assert [h.id for h in registry._activities.get_all_handlers()] == [
        "login_via_client",
        "on_startup",
        "on_cleanup",
    ]
    # No kopf timers or daemons: they would put a finalizer on every import (the resync loop
    # started by on_startup does their work).
    assert registry._spawning.get_all_handlers() == []
    assert not any(h.requires_finalizer for h in registry._changing.get_all_handlers())


def test_kopf_settings() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure_kopf(settings, OperatorSettings(watch_server_timeout_seconds=100))
    assert settings.persistence.finalizer == "eio.dev/finalizer"
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.watching.server_timeout == 100
    assert settings.watching.client_timeout == 150
    assert settings.posting.level == 30


# --- mode Continuous and unreadable checkpoints through the real reconcile --------------------
def test_continuous_import_follows_rolls_and_never_succeeds(world: World) -> None:
    kube, events, clock, ctx = world
    kube.put(import_body(mode="Continuous", **{"sources.onDelete": "Delete"}))
    reconcile(ctx, NAMESPACE, NAME)
    a1, a2, a3 = (f"{NAME}-s0-a{i}" for i in (1, 2, 3))
    env = pod_env(kube, a1)
    assert (env["IMPORTER_FOLLOW"], env["IMPORTER_ON_DELETE"]) == ("true", "delete")
    set_pod_state(kube, a1)
    write_checkpoint(
        kube,
        0,
        checkpoint(3, attempt=1, hb_pod=a1, follow=True, lag_files=7, lag_bytes=700, oldest_ago=20),
    )
    reconcile(ctx, NAMESPACE, NAME)
    st = status(kube)
    assert (st.phase, conds(st)["Synced"]) == ("CatchingUp", ("False", "CatchingUp"))
    assert st.lag.files == 7
    write_checkpoint(kube, 0, following(10, total=10, attempt=1, hb_pod=a1))
    reconcile(ctx, NAMESPACE, NAME)
    st = status(kube)
    assert (st.phase, conds(st)["Synced"]) == ("Synced", ("True", "CaughtUp"))
    assert conds(st)["Succeeded"] == ("Unknown", "Continuous")
    # a planned roll at the threshold: the next pod follows on, the import stays Synced
    set_pod_state(kube, a1, exit_code=75)
    reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [a1, a2]
    assert status(kube).phase == "Synced"
    # an exit 0 (a follower should never) starts the next pod too, counted as exited
    set_pod_state(kube, a2)
    clock.advance(10)
    write_checkpoint(
        kube, 0, following(12, total=12, attempt=2, hb_pod=a2, hb_ago=-10, complete=True)
    )
    set_pod_state(kube, a2, exit_code=0)
    reconcile(ctx, NAMESPACE, NAME)
    st = status(kube)
    assert kube.names("Pod") == [a1, a2, a3]
    assert (st.restarts.threshold, st.restarts.exited, st.phase) == (1, 1, "Synced")
    assert events.reasons() == ["Started", "Threshold", "Exited"]
    assert st.phase != ImportPhase.SUCCEEDED


def test_continuous_suspend_and_resume_keep_the_checkpoint(world: World) -> None:
    kube, events, _, ctx = world
    kube.put(import_body(mode="Continuous"))
    reconcile(ctx, NAMESPACE, NAME)
    a1 = f"{NAME}-s0-a1"
    set_pod_state(kube, a1)
    write_checkpoint(kube, 0, following(attempt=1, hb_pod=a1))
    set_spec(kube, mode="Continuous", suspend=True)
    reconcile(ctx, NAMESPACE, NAME)
    st = status(kube)
    assert (st.phase, conds(st)["Synced"]) == ("Suspended", ("False", "Suspended"))
    assert kube.names("Pod") == []
    cm = kube.get("ConfigMap", f"{NAME}-ckpt-0")
    assert cm is not None
    assert "checkpoint.json" in cm["data"]
    set_spec(kube, mode="Continuous", suspend=False)
    reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [f"{NAME}-s0-a2"]
    assert pod_env(kube, f"{NAME}-s0-a2")["IMPORTER_FOLLOW"] == "true"
    assert events.reasons() == ["Started", "Suspended", "Resumed"]
    assert status(kube).restarts.total == 0


def test_switching_a_finished_import_to_continuous_starts_following(world: World) -> None:
    kube, events, _, ctx = world
    kube.put(import_body())
    reconcile(ctx, NAMESPACE, NAME)
    a1 = f"{NAME}-s0-a1"
    write_checkpoint(kube, 0, checkpoint(10, total=10, attempt=1, hb_pod=a1, complete=True))
    set_pod_state(kube, a1, exit_code=0)
    reconcile(ctx, NAMESPACE, NAME)
    assert status(kube).phase == "Succeeded"
    set_spec(kube, mode="Continuous")
    reconcile(ctx, NAMESPACE, NAME)
    st = status(kube)
    assert kube.names("Pod") == [a1, f"{NAME}-s0-a2"]
    assert conds(st)["Succeeded"] == ("Unknown", "Continuous")
    assert st.phase == "CatchingUp"  # the checkpoint says complete, not following
    assert events.reasons() == ["Started", "Completed", "Following"]


def test_version1_checkpoint_is_reported_once_and_never_breaks_the_loop(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    kube, events, _, ctx = world
    kube.put(import_body())
    reconcile(ctx, NAMESPACE, NAME)
    a1 = f"{NAME}-s0-a1"
    set_pod_state(kube, a1)
    cm = kube.objects[("ConfigMap", NAMESPACE, f"{NAME}-ckpt-0")]
    cm["data"] = {"checkpoint.json": '{"version": 1, "done": "0-3", "filesTotal": 9}'}
    with caplog.at_level("WARNING", logger="eio_operator.reconcile"):
        for _ in range(3):
            reconcile(ctx, NAMESPACE, NAME)
    st = status(kube)
    assert conds(st)["Degraded"] == ("True", "CheckpointUnreadable")
    degraded = next(c for c in st.conditions if c.type == "Degraded")
    assert "version 1 checkpoint" in degraded.message
    assert f"{NAME}-ckpt-0" in degraded.message
    assert st.phase == "Running"
    assert events.reasons() == ["Started", "CheckpointUnreadable"]  # once, not per reconcile
    assert len([r for r in caplog.records if "unreadable" in r.getMessage()]) == 1
    # garbage is treated the same way; a good checkpoint clears it
    cm["data"] = {"checkpoint.json": "{not json"}
    reconcile(ctx, NAMESPACE, NAME)
    assert conds(status(kube))["Degraded"] == ("True", "CheckpointUnreadable")
    write_checkpoint(kube, 0, checkpoint(3, attempt=1, hb_pod=a1))
    reconcile(ctx, NAMESPACE, NAME)
    assert conds(status(kube))["Degraded"] == ("False", "AsExpected")
    assert events.reasons() == ["Started", "CheckpointUnreadable", "CheckpointUnreadable"]


def test_unreadable_shard_status_is_reported_and_the_others_keep_their_budget(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    kube, events, _, ctx = world
    kube.put(import_body(**{"parallelism.shards": 2}))
    reconcile(ctx, NAMESPACE, NAME)
    set_pod_state(kube, f"{NAME}-s0-a1", exit_code=1)  # a crash: shard 0 spends budget
    reconcile(ctx, NAMESPACE, NAME)
    assert status(kube).shards[0].failures_without_progress == 1
    body = kube.objects[("EmbeddingImport", NAMESPACE, NAME)]
    body["status"]["shards"][1]["attempt"] = "garbage"  # a hand edit, a buggy writer

    with caplog.at_level("WARNING", logger="eio_operator.reconcile"):
        reconcile(ctx, NAMESPACE, NAME)
        reconcile(ctx, NAMESPACE, NAME)

    st = status(kube)
    assert st.shards[0].failures_without_progress == 1  # not silently reset
    assert [s.index for s in st.shards] == [0, 1]
    unreadable = [e for e in events.posted if e[1] == "StatusUnreadable"]
    assert len(unreadable) == 1  # once, not per reconcile
    assert "shards.1.attempt" in unreadable[0][2]
    assert unreadable[0][0] == "Warning"
    assert [r.message for r in caplog.records if "shards.1.attempt" in r.message] != []
    assert kube.names("Pod") == [f"{NAME}-s0-a1", f"{NAME}-s1-a1"]  # no second pod


def test_unreadable_status_is_degraded_until_the_spec_changes(world: World) -> None:
    kube, events, _, ctx = world
    kube.put(import_body())
    reconcile(ctx, NAMESPACE, NAME)
    body = kube.objects[("EmbeddingImport", NAMESPACE, NAME)]
    body["status"]["restarts"] = {"total": "many"}
    reconcile(ctx, NAMESPACE, NAME)
    degraded = status(kube).condition("Degraded")
    assert degraded is not None
    assert (degraded.status, degraded.reason) == ("True", "StatusUnreadable")
    assert "restarts.total" in degraded.message
    reconcile(ctx, NAMESPACE, NAME)  # readable again: the condition stays for this generation
    assert conds(status(kube))["Degraded"] == ("True", "StatusUnreadable")
    assert events.reasons().count("StatusUnreadable") == 1
    set_spec(kube)
    reconcile(ctx, NAMESPACE, NAME)
    assert conds(status(kube))["Degraded"] == ("False", "AsExpected")


# --- issue 18: a finished checkpoint counts; the fence goes up before each pod ----------------
def fence(kube: FakeKube, shard: int = 0) -> str | None:
    cm = kube.get("ConfigMap", f"{NAME}-ckpt-{shard}")
    assert cm is not None
    return (cm["metadata"].get("annotations") or {}).get(contract.FENCE_ANNOTATION)


def test_the_fence_is_raised_before_each_pod_is_created(world: World) -> None:
    kube, _, _, ctx = world
    kube.put(import_body())
    reconcile(ctx, NAMESPACE, NAME)
    a1 = f"{NAME}-s0-a1"
    assert fence(kube) == "1"
    calls = [c[:2] if c[0] == "annotate_configmap" else c for c in kube.calls]
    assert calls.index(("annotate_configmap", f"{NAME}-ckpt-0")) < calls.index(
        ("create", "Pod", a1)
    )
    set_pod_state(kube, a1)
    write_checkpoint(kube, 0, checkpoint(3, attempt=1, hb_pod=a1))
    set_pod_state(kube, a1, exit_code=75)
    reconcile(ctx, NAMESPACE, NAME)
    assert fence(kube) == "2"
    assert pod_env(kube, f"{NAME}-s0-a2")["IMPORTER_ATTEMPT"] == "2"


def test_a_superseded_exit_is_neither_a_restart_nor_a_failure(world: World) -> None:
    kube, events, _, ctx = world
    kube.put(import_body())
    reconcile(ctx, NAMESPACE, NAME)
    a1 = f"{NAME}-s0-a1"
    set_pod_state(kube, a1)
    set_pod_state(kube, a1, exit_code=contract.EXIT_SUPERSEDED)
    reconcile(ctx, NAMESPACE, NAME)
    st = status(kube)
    assert kube.names("Pod") == [a1, f"{NAME}-s0-a2"]
    assert (st.restarts.total, st.shards[0].failures_without_progress) == (0, 0)
    assert st.shards[0].reason == "Superseded"
    assert ("Normal", "Superseded") in [e[:2] for e in events.posted]
    assert fence(kube) == "2"


def test_a_complete_checkpoint_finishes_the_import_while_its_pod_hangs_terminating(
    world: World,
) -> None:
    """The reported failure: 84/84 complete, then the node went silent (no heartbeat for 34 s,
    stallSeconds 30). The import must succeed, not stall, and not wait for the pod."""
    kube, events, clock, ctx = world
    kube.graceful_delete = True  # the silent node never confirms a deletion
    kube.put(import_body(**{"memoryPolicy.stallSeconds": 30}))
    reconcile(ctx, NAMESPACE, NAME)
    a1 = f"{NAME}-s0-a1"
    set_pod_state(kube, a1)
    write_checkpoint(
        kube, 0, checkpoint(84, total=84, attempt=1, hb_pod=a1, hb_ago=0, complete=True)
    )
    clock.advance(34)
    reconcile(ctx, NAMESPACE, NAME)
    st = status(kube)
    assert st.phase == "Succeeded"
    assert st.progress == "84/84 (100%)"
    assert "Stalled" not in events.reasons()
    assert st.restarts.total == 0
    assert st.shards[0].failures_without_progress == 0
    assert events.reasons()[-1] == "Completed"
    pod = kube.get("Pod", a1)
    assert pod is not None
    assert pod["metadata"].get("deletionTimestamp")  # deleted, not awaited
    clock.advance(240)
    reconcile(ctx, NAMESPACE, NAME)
    assert status(kube).phase == "Succeeded"
    assert kube.names("Pod") == [a1]  # still Terminating, and no second pod


def test_waiting_for_a_terminating_pod_is_said_never_being_started(world: World) -> None:
    kube, _, clock, ctx = world
    kube.graceful_delete = True
    kube.put(import_body(**{"memoryPolicy.stallSeconds": 30}))
    reconcile(ctx, NAMESPACE, NAME)
    a1 = f"{NAME}-s0-a1"
    set_pod_state(kube, a1)
    kube.objects[("Pod", NAMESPACE, a1)].setdefault("spec", {})["nodeName"] = "node-b"
    write_checkpoint(kube, 0, checkpoint(40, total=84, attempt=1, hb_pod=a1, hb_ago=0))
    clock.advance(34)
    reconcile(ctx, NAMESPACE, NAME)  # stalled after progress: deleted, no failure counted
    assert status(kube).shards[0].failures_without_progress == 0
    clock.advance(240)
    reconcile(ctx, NAMESPACE, NAME)
    st = status(kube)
    progressing = next(c for c in st.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == ("True", "PodTerminating")
    assert progressing.message == (
        f"shard 0: waiting for pod {a1} on node node-b to end (Terminating since "
        "2026-11-21T10:00:00Z) before the next attempt"
    )
    assert "being started" not in progressing.message
    assert st.phase == "Running"
    assert kube.names("Pod") == [a1]


def test_verify_in_the_checkpoint_sets_condition_status_event_and_metrics(world: World) -> None:
    """The importer records its verify in the checkpoint; the operator reports it."""
    kube, events, clock, ctx = world
    kube.put(import_body(mode="Continuous"))
    reconcile(ctx, NAMESPACE, NAME)
    a1 = f"{NAME}-s0-a1"
    set_pod_state(kube, a1)
    assert pod_env(kube, a1)["IMPORTER_VERIFY_INTERVAL_SECONDS"] == "3600"
    labels = {"namespace": NAMESPACE, "import": NAME}
    damaged = contract.VerifyResult(
        at=clock.now, clean=False, counts={"missing_points": 3, "extra_points": 1},
        names={"missing_points": ["a.jsonl"], "extra_points": ["b.md"]},
    )  # fmt: skip
    cp = following(10, total=10, attempt=1, hb_pod=a1)
    write_checkpoint(kube, 0, cp.model_copy(update={"verify": damaged}))
    reconcile(ctx, NAMESPACE, NAME)
    st = status(kube)
    assert conds(st)["Verified"] == ("False", "Damaged")
    assert st.verify is not None
    assert (st.verify.counts.missing_points, st.verify.counts.extra_points) == (3, 1)
    assert events.posted[-1] == (
        "Warning",
        "VerifyFoundDamage",
        "shard 0: 3 missing points (a.jsonl), 1 extra point (b.md); repair with "
        "embedding-importer verify --repair (docs/live-sources.md, Verify)",
    )
    assert gauge("eio_operator_verify_damage", **labels, kind="missing_points") == 3
    assert gauge("eio_operator_verify_damage", **labels, kind="orphan_points") == 0
    assert gauge("eio_operator_verify_last_timestamp_seconds", **labels) == clock.now.timestamp()
    n = len(events.posted)
    clock.advance(30)
    reconcile(ctx, NAMESPACE, NAME)  # still damaged: no second event
    assert len(events.posted) == n

    clean = contract.VerifyResult(at=clock.now, clean=True, counts={"missing_points": 0})
    write_checkpoint(kube, 0, cp.model_copy(update={"verify": clean}))
    reconcile(ctx, NAMESPACE, NAME)
    assert conds(status(kube))["Verified"] == ("True", "Clean")
    assert gauge("eio_operator_verify_damage", **labels, kind="missing_points") == 0
    assert gauge("eio_operator_verify_last_timestamp_seconds", **labels) == clock.now.timestamp()
    assert "VerifyFoundDamage" not in events.reasons()[n:]

    ctx.forget(NAMESPACE, NAME)
    assert gauge("eio_operator_verify_damage", **labels, kind="missing_points") is None
    assert gauge("eio_operator_verify_last_timestamp_seconds", **labels) is None
