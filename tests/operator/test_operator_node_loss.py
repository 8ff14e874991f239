"""Node loss through the real reconcile with an in-memory API: a server-store shard's pod on a
lost node is force-deleted and restarts (an eviction); an embedded-store shard waits with
condition NodeLost and one Warning event."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from eio_operator.kube import ApiError
from eio_operator.models import EmbeddingImportStatus
from eio_operator.reconcile import Context, reconcile
from eio_operator.settings import OperatorSettings
from operator_testlib import NAME, NAMESPACE, NOW, Events, FakeKube, import_body, set_pod_state

SERVER = {"qdrant.embedded": None, "qdrant.url": "http://qdrant:6333"}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> Any:
        return self.now


def lost_node(kube: FakeKube, seconds_ago: float, clock: Clock) -> None:
    at = (clock.now - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.objects[("Node", "", "devnode-1")] = {
        "metadata": {"name": "devnode-1"},
        "spec": {
            "taints": [
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": at}
            ]
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "Unknown", "lastTransitionTime": at}]
        },
    }


def start_on_node(**patch: Any) -> tuple[FakeKube, Events, Clock, Context, str]:
    kube, events, clock = FakeKube(), Events(), Clock()
    ctx = Context(settings=OperatorSettings(), kube=kube, events=events, clock=clock)
    kube.put(import_body(**patch))
    reconcile(ctx, NAMESPACE, NAME)
    a1 = f"{NAME}-s0-a1"
    set_pod_state(kube, a1)
    kube.objects[("Pod", NAMESPACE, a1)]["spec"]["nodeName"] = "devnode-1"
    reconcile(ctx, NAMESPACE, NAME)
    return kube, events, clock, ctx, a1


def status(kube: FakeKube) -> EmbeddingImportStatus:
    body = kube.get("EmbeddingImport", NAME)
    assert body is not None
    return EmbeddingImportStatus.model_validate(body.get("status") or {})


def test_server_store_pod_is_force_deleted_after_the_grace_and_restarts() -> None:
    kube, events, clock, ctx, a1 = start_on_node(**SERVER, **{"memoryPolicy.nodeLostSeconds": 60})
    lost_node(kube, 30, clock)
    result = reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [a1]  # within the grace: nothing yet
    assert result.requeue_after is not None
    assert result.requeue_after <= 30
    assert ("force_delete_pod", a1) not in kube.calls
    clock.now += timedelta(seconds=31)
    reconcile(ctx, NAMESPACE, NAME)
    assert ("force_delete_pod", a1) in kube.calls
    assert "NodeLost" in events.reasons()
    c = status(kube).condition("NodeLost")
    assert c is not None
    assert (c.status, c.reason) == ("True", "ForceDeleted")
    reconcile(ctx, NAMESPACE, NAME)  # the pod is gone: an eviction, the next attempt starts
    assert kube.names("Pod") == [f"{NAME}-s0-a2"]
    st = status(kube)
    assert (st.restarts.total, st.restarts.evicted) == (1, 1)
    c = st.condition("NodeLost")
    assert c is not None
    assert (c.status, c.reason) == ("False", "NodesHealthy")


def test_embedded_store_shard_waits_for_its_node_with_a_condition_and_one_event() -> None:
    kube, events, clock, ctx, a1 = start_on_node()
    lost_node(kube, 600, clock)
    for _ in range(3):
        reconcile(ctx, NAMESPACE, NAME)
        clock.now += timedelta(seconds=10)
    assert kube.names("Pod") == [a1]
    assert not [c for c in kube.calls if c[0] in ("force_delete_pod", "delete_pod")]
    c = status(kube).condition("NodeLost")
    assert c is not None
    assert (c.status, c.reason) == ("True", "StoreOnLostNode")
    assert "devnode-1" in c.message
    assert "embedded" in c.message
    assert events.reasons().count("NodeLost") == 1


def test_nodes_not_readable_is_logged_once_and_the_reconcile_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube, _, clock, ctx, a1 = start_on_node(**SERVER)
    lost_node(kube, 600, clock)

    def forbidden(name: str) -> Any:
        raise ApiError(403, f'nodes "{name}" is forbidden')

    kube.get_node = forbidden  # type: ignore[method-assign]
    with caplog.at_level("WARNING"):
        for _ in range(2):
            reconcile(ctx, NAMESPACE, NAME)
    assert kube.names("Pod") == [a1]  # no verdict without the Node
    assert status(kube).condition("NodeLost") is None
    assert [r.message for r in caplog.records].count(
        next(r.message for r in caplog.records if "cannot read node" in r.message)
    ) == 1
