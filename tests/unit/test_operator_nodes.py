"""eio_operator.nodes: which pods on lost nodes are force-deleted and which wait (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eio_operator import nodes
from eio_operator.models import EmbeddingImportSpec, EmbeddingImportStatus
from eio_operator.nodes import Verdict

NOW = datetime(2026, 12, 4, 22, 0, 0, tzinfo=UTC)


def _iso(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def node(ready: str = "True", since: float = 0, taints: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "metadata": {"name": "n1"},
        "spec": {
            "taints": [{"key": k, "effect": "NoExecute", "timeAdded": _iso(since)} for k in taints]
        },
        "status": {
            "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": _iso(since)}]
        },
    }


def pod(phase: str = "Running", node_name: str = "n1") -> dict[str, Any]:
    return {
        "metadata": {"name": "imp-s0-a1", "uid": "u1"},
        "spec": {"nodeName": node_name},
        "status": {"phase": phase},
    }


def spec(embedded: bool, grace: int = 60) -> EmbeddingImportSpec:
    qdrant: dict[str, Any] = {"collection": "c"}
    if embedded:
        qdrant["embedded"] = {"hostPath": {"path": "/var/lib/eio"}}
    else:
        qdrant["url"] = "http://qdrant:6333"
    return EmbeddingImportSpec.model_validate(
        {
            "sources": {"hostPath": {"path": "/src"}},
            "qdrant": qdrant,
            "importer": {"resources": {"limits": {"memory": "1Gi"}}},
            "memoryPolicy": {"nodeLostSeconds": grace},
        }
    )


UNREACH = ("node.kubernetes.io/unreachable",)


@pytest.mark.parametrize(
    ("the_node", "embedded", "phase", "want"),
    [
        (node(), False, "Running", None),  # healthy node
        (node("Unknown", 10, UNREACH), False, "Running", Verdict.WITHIN_GRACE),
        (node("Unknown", 61, UNREACH), False, "Running", Verdict.FORCE_DELETE),
        (node("Unknown", 61, UNREACH), True, "Running", Verdict.STORE_ON_NODE),
        (node("False", 120), False, "Running", Verdict.FORCE_DELETE),  # NotReady, no taint
        (node("True", 120, UNREACH), False, "Running", Verdict.FORCE_DELETE),  # taint only
        (node("Unknown", 61, UNREACH), False, "Failed", None),  # ended pods: nothing to do
        (node("Unknown", 61, UNREACH), False, "Succeeded", None),
        (None, False, "Running", None),  # node unreadable or deleted: no verdict
    ],
)
def test_verdicts(
    the_node: dict[str, Any] | None, embedded: bool, phase: str, want: Verdict | None
) -> None:
    found = nodes.losses(spec(embedded), [pod(phase)], {"n1": the_node}, NOW)
    assert [x.verdict for x in found] == ([want] if want else [])


def test_earliest_sign_counts_and_grace_zero_acts_at_once() -> None:
    n = node("Unknown", 30, UNREACH)
    n["spec"]["taints"][0]["timeAdded"] = _iso(90)
    since, why = nodes.lost_since(n)
    assert since == NOW - timedelta(seconds=90)
    assert "Ready=Unknown" in why
    assert "unreachable" in why
    lost = nodes.losses(spec(False, grace=0), [pod()], {"n1": node("Unknown", 0, UNREACH)}, NOW)
    assert lost[0].verdict == Verdict.FORCE_DELETE


def test_pods_without_node_or_on_other_nodes_are_left_alone() -> None:
    lost_node = {"n1": node("Unknown", 600, UNREACH)}
    assert nodes.losses(spec(False), [pod(node_name="")], lost_node, NOW) == []
    assert nodes.losses(spec(False), [pod(node_name="n2")], lost_node, NOW) == []


def test_requeue_at_the_end_of_the_grace() -> None:
    found = nodes.losses(spec(False, 60), [pod()], {"n1": node("Unknown", 45, UNREACH)}, NOW)
    assert nodes.requeue_after(found, 60) == 15
    assert nodes.requeue_after([], 60) is None


def test_messages_name_the_node_and_why_and_do_not_change_with_time() -> None:
    found = nodes.losses(spec(True), [pod()], {"n1": node("Unknown", 100, UNREACH)}, NOW)
    later = nodes.losses(spec(True), [pod()], {"n1": node("Unknown", 100, UNREACH)}, NOW)
    msg = found[0].message
    assert "node n1" in msg
    assert "embedded Qdrant store" in msg
    assert "imp-s0-a1" in msg
    assert later[0].message == msg


def test_condition_true_while_waiting_then_false_and_absent_otherwise() -> None:
    st = EmbeddingImportStatus()
    assert nodes.with_condition(st, [], NOW, 1) == st  # never met a lost node: no condition
    waiting = nodes.losses(spec(True), [pod()], {"n1": node("Unknown", 100, UNREACH)}, NOW)
    st = nodes.with_condition(st, waiting, NOW, 1)
    c = st.condition(nodes.NODE_LOST)
    assert c is not None
    assert (c.status, c.reason) == ("True", "StoreOnLostNode")
    assert "n1" in c.message
    again = nodes.with_condition(st, waiting, NOW + timedelta(seconds=5), 1)
    assert again.to_wire() == st.to_wire()  # no status write per round
    healed = nodes.with_condition(st, [], NOW + timedelta(seconds=9), 1)
    c = healed.condition(nodes.NODE_LOST)
    assert c is not None
    assert (c.status, c.reason) == ("False", "NodesHealthy")
    deleted = nodes.losses(spec(False), [pod()], {"n1": node("Unknown", 100, UNREACH)}, NOW)
    c = nodes.with_condition(healed, deleted, NOW, 1).condition(nodes.NODE_LOST)
    assert c is not None
    assert (c.status, c.reason) == ("True", "ForceDeleted")


def test_importer_pods_of_one_import_spread_over_nodes_softly() -> None:
    from eio_operator import builders
    from eio_operator.builders import Owner

    owner = Owner(name="imp", namespace="ns", uid="u")
    pods = [builders.importer_pod(owner, spec(False), shard, 1, 2**30, "img") for shard in range(2)]
    for p in pods:
        (tsc,) = p["spec"]["topologySpreadConstraints"]
        assert tsc["topologyKey"] == "kubernetes.io/hostname"
        assert tsc["maxSkew"] == 1
        assert tsc["whenUnsatisfiable"] == "ScheduleAnyway"  # one node still schedules
        # the selector matches every shard and attempt of this import, and only of it
        assert tsc["labelSelector"] == {"matchLabels": {"eio.dev/import": "imp"}}
        labels = p["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in tsc["labelSelector"]["matchLabels"].items())


def test_importer_priority_class_and_tolerations_reach_the_pod() -> None:
    from eio_operator import builders
    from eio_operator.builders import Owner

    base = spec(False).model_dump(by_alias=True, exclude_none=True)
    base["importer"]["priorityClassName"] = "spot-batch"
    base["importer"]["tolerations"] = [
        {"key": "cloud.example/spot", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 30},
    ]  # fmt: skip
    s = EmbeddingImportSpec.model_validate(base)
    pod_spec = builders.importer_pod(Owner("imp", "ns", "u"), s, 0, 1, 2**30, "img")["spec"]
    assert pod_spec["priorityClassName"] == "spot-batch"
    assert pod_spec["tolerations"] == base["importer"]["tolerations"]
    plain = builders.importer_pod(Owner("imp", "ns", "u"), spec(False), 0, 1, 2**30, "img")
    assert "priorityClassName" not in plain["spec"]
    assert "tolerations" not in plain["spec"]
