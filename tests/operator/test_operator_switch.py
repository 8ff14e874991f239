"""The coordinated switch of a rebuild with several shards: the operator orders the switch once
every shard is ready with the same digest, and the retire once every shard has switched
(``eio_operator.switch``, written on the checkpoint ConfigMaps like the fence)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from eio_operator.decision import Action, decide
from eio_operator.models import ShardPhase, ShardStatus
from eio_operator.reconcile import Context, reconcile
from eio_operator.settings import OperatorSettings
from eio_operator.switch import Orders, Plan, after, plan, readiness_text
from operator_testlib import (
    NAME,
    NAMESPACE,
    NOW,
    Events,
    FakeKube,
    checkpoint,
    following,
    import_body,
    make_spec,
    pod,
    set_pod_state,
    write_checkpoint,
)

from eio_common import contract
from eio_common.contract import BuildState, Checkpoint

SW, RT = contract.SWITCH_ANNOTATION, contract.RETIRE_ANNOTATION
READY_AT = NOW - timedelta(seconds=30)


def filling(digest: str | None = "d2", ready: bool = False) -> BuildState:
    return BuildState(active="convs", target="convs--v2", differences=["chunk size 120 -> 60"],
                      digest=digest, readyAt=READY_AT if ready else None)  # fmt: skip


def switched(digest: str | None = "d2", retiring: bool = True) -> BuildState:
    return BuildState(active="convs--v2", digest=digest, switchedAt=NOW,
                      retiring=["convs"] if retiring else [])  # fmt: skip


READY, BUSY, DONE = filling(ready=True), filling(), switched()
NONE, ON_D2, RETIRED = Orders(), Orders(switch="d2"), Orders(switch="d2", retire="d2")


@pytest.mark.parametrize(
    ("builds", "orders", "writes"),
    [
        pytest.param([READY, READY], [NONE, NONE], {0: {SW: "d2"}, 1: {SW: "d2"}}, id="all-ready"),
        pytest.param([READY, BUSY], [NONE, NONE], {}, id="one-still-filling"),
        pytest.param([READY, None], [NONE, NONE], {}, id="one-unknown"),
        pytest.param([READY, filling("d3", True)], [NONE, NONE], {}, id="other-digest"),
        pytest.param([filling(None, True)] * 2, [NONE, NONE], {}, id="importer-without-digest"),
        pytest.param([READY], [NONE], {}, id="one-shard-switches-alone"),
        pytest.param([READY, READY], [ON_D2, NONE], {1: {SW: "d2"}}, id="finish-a-partial-write"),
        pytest.param([DONE, READY], [ON_D2, NONE], {1: {SW: "d2"}}, id="one-switched-already"),
        pytest.param([READY, READY], [ON_D2, ON_D2], {}, id="ordered-already"),
        pytest.param([DONE, READY], [ON_D2, ON_D2], {}, id="switching"),
        pytest.param([DONE, DONE], [ON_D2, ON_D2], {0: {RT: "d2"}, 1: {RT: "d2"}}, id="retire"),
        pytest.param([DONE, DONE], [RETIRED, RETIRED], {}, id="retired-already"),
        pytest.param([DONE, DONE], [NONE, NONE], {}, id="never-ordered-nothing-to-retire"),
        pytest.param([DONE, None], [ON_D2, ON_D2], {}, id="retire-waits-for-unknown"),
        pytest.param(
            [filling("d3", True)] * 2, [ON_D2, ON_D2], {0: {SW: "d3"}, 1: {SW: "d3"}},
            id="spec-changed-again-replaces-the-order",
        ),
    ],
)  # fmt: skip
def test_plan(
    builds: list[BuildState | None], orders: list[Orders], writes: dict[int, dict[str, str]]
) -> None:
    p = plan(builds, orders)
    assert p.writes == writes
    kinds = {k for w in writes.values() for k in w}
    assert p.switch_ordered == ("d3" if "d3" in str(writes) else "d2" if SW in kinds else None)
    assert p.retire_ordered == ("d2" if RT in kinds else None)
    assert plan(builds, after(orders, p)).writes == {}  # written: nothing more to do


def test_readiness_text() -> None:
    assert readiness_text([READY], [NONE]) is None  # one shard
    assert readiness_text([DONE, DONE], [ON_D2, ON_D2]) is None  # no rebuild under way
    assert readiness_text([READY, BUSY], [NONE, NONE]) == (
        "ready 1/2 shards (shard 0 since 2026-11-21T09:59:30Z); "
        "waiting for shard 1 (filling convs--v2)"
    )
    assert readiness_text([None, READY], [NONE, NONE]) == (
        "ready 1/2 shards (shard 1 since 2026-11-21T09:59:30Z); "
        "waiting for shard 0 (no checkpoint of its current attempt yet)"
    )
    assert readiness_text([READY, filling("d3", True)], [NONE, NONE]) == (
        "ready 0/2 shards; waiting for shard 0 (filling convs--v2 for build d2; the shards' "
        "builds differ), shard 1 (filling convs--v2 for build d3; the shards' builds differ)"
    )
    assert readiness_text([DONE, READY], [ON_D2, ON_D2]) == (
        "ready 2/2 shards (shard 0 switched, shard 1 since 2026-11-21T09:59:30Z); switch ordered"
    )
    assert readiness_text([READY, READY], [NONE, NONE]) == (
        "ready 2/2 shards (shard 0 since 2026-11-21T09:59:30Z, shard 1 since "
        "2026-11-21T09:59:30Z); ordering the switch"
    )
    assert plan([READY, READY], [NONE, NONE]) != Plan({})


# --------------------------------------------------------------------------------------------
# Health: a shard that is ready and waits for the order is neither stalled nor complete
# --------------------------------------------------------------------------------------------
TWO: dict[str, Any] = {"parallelism.shards": 2}
A3 = f"{NAME}-s0-a3"


def _once(build: BuildState | None, *, complete: bool, hb_ago: float = 5) -> Checkpoint:
    cp = checkpoint(10, total=10, complete=complete, attempt=3, hb_pod=A3, hb_ago=hb_ago)
    return cp.model_copy(update={"build": build})


def _history() -> ShardStatus:
    return ShardStatus(index=0, phase=ShardPhase.RUNNING, attempt=3, handled_attempt=2, pod=A3,
                       pod_uid="uid-0-3", memory_limit="1Gi",
                       build_hash=make_spec(**TWO).build_hash)  # fmt: skip


@pytest.mark.parametrize("complete", [False, True])
def test_a_once_shard_waiting_for_the_order_keeps_running(complete: bool) -> None:
    for build in (READY, DONE):  # waits for the switch order, then for the retire order
        d = decide(make_spec(**TWO), 0, (pod(3),), _once(build, complete=complete), _history(),
                   NOW, 1, import_name=NAME)  # fmt: skip
        assert (d.action, d.shard.phase, d.delete) == (Action.WAIT, ShardPhase.RUNNING, ())
    # heartbeats still count: a shard silent for longer than stallSeconds is stalled
    silent = _once(READY, complete=complete, hb_ago=400)
    d = decide(make_spec(**TWO), 0, (pod(3, started_ago=400),), silent, _history(), NOW, 1,
               import_name=NAME)  # fmt: skip
    assert (d.action, d.reason) == (Action.KILL, "Stalled")


def test_a_once_shard_completes_after_its_retire() -> None:
    done = _once(switched(retiring=False), complete=True)
    d = decide(make_spec(**TWO), 0, (pod(3, exit_code=0),), done, _history(), NOW, 1,
               import_name=NAME)  # fmt: skip
    assert (d.action, d.shard.phase) == (Action.COMPLETE, ShardPhase.SUCCEEDED)
    # one shard: the importer switches alone, its build state is not the operator's business
    one = decide(make_spec(), 0, (pod(3, exit_code=0),), _once(READY, complete=True),
                 _history(), NOW, 1, import_name=NAME)  # fmt: skip
    assert one.action == Action.COMPLETE


# --------------------------------------------------------------------------------------------
# Reconcile: the orders on the ConfigMaps, the condition and the events
# --------------------------------------------------------------------------------------------
def _shard_cp(shard: int, build: BuildState, attempt: int = 1) -> Checkpoint:
    cp = following(20, total=40, attempt=attempt, shard=shard,
                   hb_pod=f"{NAME}-s{shard}-a{attempt}")  # fmt: skip
    return cp.model_copy(update={"build": build})


def _annotations(kube: FakeKube, shard: int) -> dict[str, str]:
    cm = kube.get("ConfigMap", contract.checkpoint_configmap_name(NAME, shard))
    assert cm is not None
    return dict(cm["metadata"].get("annotations") or {})


def _rebuilding(kube: FakeKube) -> dict[str, str]:
    st = kube.get("EmbeddingImport", NAME)["status"]  # type: ignore[index]
    return next(c for c in st["conditions"] if c["type"] == "Rebuilding")


def _two_shards_running() -> tuple[FakeKube, Events, Context]:
    """A Continuous import of 2 shards whose first pods run."""
    kube, events = FakeKube(), Events()
    ctx = Context(settings=OperatorSettings(), kube=kube, events=events, clock=lambda: NOW)
    kube.put(import_body(mode="Continuous", **TWO))
    reconcile(ctx, NAMESPACE, NAME)
    for shard in (0, 1):
        set_pod_state(kube, f"{NAME}-s{shard}-a1")
    return kube, events, ctx


def test_the_operator_orders_the_switch_once_every_shard_is_ready() -> None:
    kube, events, ctx = _two_shards_running()
    write_checkpoint(kube, 0, _shard_cp(0, READY))
    write_checkpoint(kube, 1, _shard_cp(1, BUSY))
    reconcile(ctx, NAMESPACE, NAME)
    assert SW not in _annotations(kube, 0)
    cond = _rebuilding(kube)
    assert (cond["status"], cond["reason"]) == ("True", "SettingsChanged")
    assert "ready 1/2 shards (shard 0 since 2026-11-21T09:59:30Z)" in cond["message"]
    assert "waiting for shard 1 (filling convs--v2)" in cond["message"]
    write_checkpoint(kube, 1, _shard_cp(1, READY))
    reconcile(ctx, NAMESPACE, NAME)
    for shard in (0, 1):  # the order beside the fence; the checkpoint data untouched
        assert _annotations(kube, shard) == {contract.FENCE_ANNOTATION: "1", SW: "d2"}
        cm = kube.get("ConfigMap", contract.checkpoint_configmap_name(NAME, shard))
        assert cm is not None
        assert contract.CHECKPOINT_KEY in cm["data"]
    assert events.reasons().count("RebuildSwitchOrdered") == 1
    reconcile(ctx, NAMESPACE, NAME)
    assert events.reasons().count("RebuildSwitchOrdered") == 1
    assert _rebuilding(kube)["message"].endswith("; switch ordered")
    # shard 0 switches first: no RebuildSwitched until every shard reads the new version
    write_checkpoint(kube, 0, _shard_cp(0, DONE))
    reconcile(ctx, NAMESPACE, NAME)
    assert "RebuildSwitched" not in events.reasons()
    assert RT not in _annotations(kube, 0)
    write_checkpoint(kube, 1, _shard_cp(1, DONE))
    reconcile(ctx, NAMESPACE, NAME)
    assert events.reasons().count("RebuildSwitched") == 1
    assert [_annotations(kube, s)[RT] for s in (0, 1)] == ["d2", "d2"]
    st = kube.get("EmbeddingImport", NAME)["status"]  # type: ignore[index]
    assert st["activeVersion"] == "convs--v2"
    assert (_rebuilding(kube)["status"], _rebuilding(kube)["reason"]) == ("False", "Current")


def test_no_order_from_a_checkpoint_of_an_earlier_attempt() -> None:
    """A checkpoint written before the current attempt (e.g. the pod made for the old build
    settings) does not vouch for the digest: the order waits for the current pod's."""
    kube, events, ctx = _two_shards_running()
    write_checkpoint(kube, 0, _shard_cp(0, READY))
    write_checkpoint(kube, 1, _shard_cp(1, READY, attempt=0))
    reconcile(ctx, NAMESPACE, NAME)
    assert SW not in _annotations(kube, 0)
    assert "RebuildSwitchOrdered" not in events.reasons()
    assert (
        "waiting for shard 1 (no checkpoint of its current attempt yet)"
        in (_rebuilding(kube)["message"])
    )
