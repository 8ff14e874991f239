"""A change of build fields (model, chunking, format) on an existing import: the operator ends
the pod made for the old fields gracefully (SpecChanged, not a restart), the next pod fills a
new version of the collection (IMPORTER_REBUILD), and the status shows the active version and
the Rebuilding condition from the checkpoints' build state; other fields wait for the next roll.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from eio_operator.builders import Owner, importer_pod
from eio_operator.decision import Action, Decision, decide
from eio_operator.models import ShardPhase, ShardStatus
from eio_operator.observe import ObservedPod, observe_pod
from eio_operator.reconcile import Context, reconcile
from eio_operator.settings import OperatorSettings
from eio_operator.status import build_summary
from operator_testlib import (
    NAME,
    NAMESPACE,
    NOW,
    Events,
    FakeKube,
    following,
    import_body,
    make_spec,
    pod,
    set_pod_state,
    write_checkpoint,
)

from eio_common import contract
from eio_common.contract import BuildState

OLD = make_spec()
CHUNK = {"chunking.size": 60}
A3 = f"{NAME}-s0-a3"


def _made_for(p: ObservedPod, spec_patch: dict[str, object] | None = None) -> ObservedPod:
    return replace(p, build_hash=make_spec(**(spec_patch or {})).build_hash)


def _history(**kw: object) -> ShardStatus:
    base: dict[str, object] = {"index": 0, "phase": ShardPhase.RUNNING, "attempt": 3,
                               "handled_attempt": 2, "pod": A3, "pod_uid": "uid-0-3",
                               "memory_limit": "1Gi", "build_hash": OLD.build_hash}  # fmt: skip
    base.update(kw)
    return ShardStatus.model_validate(base)


def _decide(pods: tuple[ObservedPod, ...], h: ShardStatus, **patch: object) -> Decision:
    return decide(make_spec(**patch), 0, pods, following(5, attempt=3, hb_pod=A3), h, NOW, 7,
                  import_name=NAME)  # fmt: skip


def test_build_field_change_ends_the_pod_gracefully_without_a_restart() -> None:
    d = decide(make_spec(**CHUNK), 0, (_made_for(pod(3)),), following(5, attempt=3, hb_pod=A3),
               _history(), NOW, 7, import_name=NAME)  # fmt: skip
    assert (d.action, d.reason, d.restart, d.delete, d.create) == (
        Action.KILL, "SpecChanged", None, (A3,), None)  # fmt: skip
    assert [(e.type, e.reason) for e in d.events] == [("Normal", "SpecChanged")]
    assert d.shard.handled_attempt == 3
    assert d.shard.failures_without_progress == 0
    # the pod terminates (SIGTERM: checkpoint, exit 75): the next pod waits for it, then starts
    going = replace(_made_for(pod(3)), deleting=True)
    d2 = decide(make_spec(**CHUNK), 0, (going,), None, d.shard, NOW, 7, import_name=NAME)
    assert (d2.action, d2.create) == (Action.WAIT, None)
    gone = _made_for(pod(3, exit_code=75))
    d3 = decide(make_spec(**CHUNK), 0, (gone,), None, d2.shard, NOW, 7, import_name=NAME)
    assert (d3.action, d3.restart, d3.create is not None) == (Action.START, None, True)
    assert d3.shard.build_hash == make_spec(**CHUNK).build_hash != OLD.build_hash


def test_fields_that_do_not_change_the_points_wait_for_the_next_roll() -> None:
    for patch in (
        {"memoryPolicy.threshold": "70%"},
        {"memoryPolicy.retryBudget": 5},
        {"importer.resources.limits.memory": "2Gi"},
        {"qdrant.keepOldVersions": 2},
    ):
        d = _decide((_made_for(pod(3)),), _history(), **patch)
        assert (d.action, d.delete) == (Action.WAIT, ()), patch
    for patch in (
        {"chunking.overlap": 10},
        {"embedding.modelDir": "/models/int8"},
        {"sources.format": "jsonl"},
        {"sources.jsonlField": "body"},
    ):
        d = _decide((_made_for(pod(3)),), _history(), **patch)
        assert d.action == Action.KILL, patch


def test_a_pod_of_an_older_operator_is_left_alone() -> None:
    d = _decide((pod(3),), _history(), **CHUNK)  # no build-hash annotation
    assert d.action == Action.WAIT


def test_a_server_with_several_shards_rebuilds_on_the_operators_order() -> None:
    server: dict[str, object] = {"qdrant.embedded": None, "qdrant.url": "http://qdrant:6333",
              "parallelism.shards": 2}  # fmt: skip
    d = _decide((_made_for(pod(3), server),), _history(), **server, **CHUNK)
    assert (d.action, d.reason) == (Action.KILL, "SpecChanged")
    env = _env(make_spec(**server))
    assert (env["IMPORTER_REBUILD"], env["IMPORTER_SWITCH_ON_ORDER"]) == ("true", "true")
    assert env["IMPORTER_KEEP_OLD_VERSIONS"] == "0"
    assert _env(make_spec())["IMPORTER_SWITCH_ON_ORDER"] == "false"  # one shard switches alone
    embedded = _env(make_spec(**{"parallelism.shards": 2}))
    assert embedded["IMPORTER_SWITCH_ON_ORDER"] == "true"


def test_a_finished_once_shard_fills_a_new_version_after_a_build_change() -> None:
    done = _history(phase=ShardPhase.SUCCEEDED, handled_attempt=3)
    exited = (_made_for(pod(3, exit_code=0)),)
    d = decide(make_spec(), 0, exited, None, done, NOW, 7, import_name=NAME)
    assert d.action == Action.WAIT
    d = decide(make_spec(**CHUNK), 0, exited, None, done, NOW, 8, import_name=NAME)
    assert (d.action, d.reason, d.create is not None) == (Action.START, "Restarted", True)
    legacy = done.evolve(build_hash=None)  # finished before this operator: left alone
    d = decide(make_spec(**CHUNK), 0, exited, None, legacy, NOW, 8, import_name=NAME)
    assert d.action == Action.WAIT


def _env(spec: object) -> dict[str, str]:
    owner = Owner(name=NAME, namespace=NAMESPACE, uid="u")
    manifest = importer_pod(owner, spec, 0, 1, 2**30, "img")  # type: ignore[arg-type]
    return {e["name"]: e.get("value") for e in manifest["spec"]["containers"][0]["env"]}


def test_pods_rebuild_and_carry_the_build_hash() -> None:
    spec = make_spec(**{"qdrant.keepOldVersions": 1})
    env = _env(spec)
    assert (env["IMPORTER_REBUILD"], env["IMPORTER_KEEP_OLD_VERSIONS"]) == ("true", "1")
    owner = Owner(name=NAME, namespace=NAMESPACE, uid="u")
    manifest = importer_pod(owner, spec, 0, 1, 2**30, "img")
    assert manifest["metadata"]["annotations"][contract.BUILD_HASH_ANNOTATION] == spec.build_hash
    observed = observe_pod(manifest)
    assert observed is not None
    assert observed.build_hash == spec.build_hash
    assert spec.build_hash == make_spec().build_hash  # keepOldVersions is no build field


def _rebuilding(target: str | None, active: str, done: int = 12) -> object:
    build = BuildState(active=active, target=target,
                       differences=["chunk size 120 -> 60"] if target else [],
                       switched_at=None if target else NOW)  # fmt: skip
    return following(done, total=40, attempt=1, hb_pod=f"{NAME}-s0-a1").model_copy(
        update={"build": build}
    )


def test_build_summary_of_the_shards() -> None:
    assert build_summary({0: following(5)}) is None  # an importer before versions
    b = build_summary({0: _rebuilding("convs--v2", "convs")})  # type: ignore[dict-item]
    assert b is not None
    assert (b.active, b.target, b.differences, b.files_done, b.files_total) == (
        "convs", "convs--v2", ["chunk size 120 -> 60"], 12, 40)  # fmt: skip


def test_status_condition_and_events_follow_the_checkpoints() -> None:
    kube, events = FakeKube(), Events()
    clock = [NOW]
    ctx = Context(settings=OperatorSettings(), kube=kube, events=events, clock=lambda: clock[0])
    kube.put(import_body(mode="Continuous"))
    reconcile(ctx, NAMESPACE, NAME)
    a1 = f"{NAME}-s0-a1"
    set_pod_state(kube, a1)
    write_checkpoint(kube, 0, _rebuilding("convs--v2", "convs"))  # type: ignore[arg-type]
    reconcile(ctx, NAMESPACE, NAME)
    st = kube.get("EmbeddingImport", NAME)["status"]  # type: ignore[index]
    assert st["activeVersion"] == "convs"
    assert st["build"]["target"] == "convs--v2"
    cond = next(c for c in st["conditions"] if c["type"] == "Rebuilding")
    assert (cond["status"], cond["reason"]) == ("True", "SettingsChanged")
    assert cond["message"] == (
        "chunk size 120 -> 60: 12/40 files into convs--v2; searches read convs"
    )
    assert events.reasons().count("RebuildStarted") == 1
    clock[0] += timedelta(seconds=30)
    write_checkpoint(kube, 0, _rebuilding("convs--v2", "convs", done=20))  # type: ignore[arg-type]
    reconcile(ctx, NAMESPACE, NAME)
    assert events.reasons().count("RebuildStarted") == 1  # once per change
    write_checkpoint(kube, 0, _rebuilding(None, "convs--v2", done=40))  # type: ignore[arg-type]
    reconcile(ctx, NAMESPACE, NAME)
    st = kube.get("EmbeddingImport", NAME)["status"]  # type: ignore[index]
    assert st["activeVersion"] == "convs--v2"
    assert "target" not in st["build"]
    cond = next(c for c in st["conditions"] if c["type"] == "Rebuilding")
    assert (cond["status"], cond["reason"]) == ("False", "Current")
    assert events.reasons().count("RebuildSwitched") == 1
    reconcile(ctx, NAMESPACE, NAME)
    assert events.reasons().count("RebuildSwitched") == 1
    assert st["restarts"]["total"] == 0
