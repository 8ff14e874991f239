"""Importer pods on lost nodes: when to force-delete them and when to wait.

A node that stops heartbeating turns ``Ready=Unknown`` and gets the
``node.kubernetes.io/unreachable`` taint from the node-lifecycle controller. Its pods stay
``Running`` (nobody can confirm they stopped), and once the taint evicts them (300 s by
default) they stay ``Terminating`` for good: no kubelet is left to confirm the deletion. The
roll decision would wait for them forever.

After ``spec.memoryPolicy.nodeLostSeconds`` on a lost node the operator force-deletes the
pod (grace 0), so the shard restarts elsewhere (counted as an eviction), but only when the
shard's store is not tied to that node: a Qdrant server (``qdrant.url``) is reached over the
network from any node, and the checkpoint is a ConfigMap. An embedded store (``qdrant.embedded``
on a hostPath or PVC) is a directory on the lost node: a new pod elsewhere would start from an
empty or different directory, and the old one may still be writing to the real one (a
partition, not a crash). Such a shard waits for the node, with condition ``NodeLost`` (reason
``StoreOnLostNode``) naming the node; an admin who knows better deletes the pod by hand.

Pure: Node and Pod manifests in, verdicts out. Wiring in :mod:`.reconcile`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from eio_operator.models import Condition, EmbeddingImportSpec, EmbeddingImportStatus
from eio_operator.observe import parse_time
from eio_operator.reasons import ConditionReason
from eio_operator.status import set_condition

NODE_LOST: Final = "NodeLost"
UNREACHABLE: Final = "node.kubernetes.io/unreachable"
NOT_READY: Final = "node.kubernetes.io/not-ready"

Manifest = Mapping[str, Any]


class Verdict(StrEnum):
    WITHIN_GRACE = "WithinGrace"  # lost, but not for nodeLostSeconds yet
    FORCE_DELETE = "ForceDelete"  # lost long enough, store reachable from elsewhere
    STORE_ON_NODE = "StoreOnLostNode"  # lost long enough, but the store lives there: wait


@dataclass(frozen=True)
class NodeLoss:
    """A pod of ours on a lost node, and what to do about it."""

    pod: str
    node: str
    verdict: Verdict
    since: datetime  # when the node was first seen lost
    lost_seconds: int
    why: str  # how the node looks lost: "Ready=Unknown, taint node.kubernetes.io/..."

    @property
    def message(self) -> str:
        """Stable while nothing changes (no counter in it: no status write per round)."""
        at = self.since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        head = f"pod {self.pod}: node {self.node} lost since {at} ({self.why})"
        if self.verdict == Verdict.FORCE_DELETE:
            return f"{head}; force-deleting it (grace 0) so the shard restarts on another node"
        if self.verdict == Verdict.STORE_ON_NODE:
            return (f"{head}; not force-deleting it: its embedded Qdrant store is a directory "
                    "on that node (qdrant.embedded), so the shard waits for the node to come "
                    "back (or delete the pod by hand once the node is known dead)")  # fmt: skip
        return f"{head}; waiting (memoryPolicy.nodeLostSeconds)"


def lost_since(node: Manifest) -> tuple[datetime | None, str]:
    """When ``node`` was last seen healthy if it is lost now (Ready not True, or tainted
    unreachable/not-ready), with how it looks lost; (None, "") for a healthy node."""
    times: list[datetime] = []
    signs: list[str] = []
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") != "True":
            signs.append(f"Ready={c.get('status') or 'Unknown'}")
            if (t := parse_time(c.get("lastTransitionTime"))) is not None:
                times.append(t)
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("key") in (UNREACHABLE, NOT_READY):
            signs.append(f"taint {taint.get('key')}:{taint.get('effect')}")
            if (t := parse_time(taint.get("timeAdded"))) is not None:
                times.append(t)
    if not signs:
        return None, ""
    return (min(times) if times else datetime.fromtimestamp(0, UTC)), ", ".join(signs)


def store_on_node(spec: EmbeddingImportSpec) -> bool:
    """Whether a shard's store lives on the node its pod runs on (an embedded store)."""
    return spec.qdrant.embedded is not None


def judge(
    pod: Manifest, node: Manifest | None, tied: bool, grace: int, now: datetime
) -> NodeLoss | None:
    """The verdict on ``pod`` given its ``node`` (None: unknown or unreadable, no verdict;
    the pod garbage collector removes pods of deleted nodes)."""
    phase = (pod.get("status") or {}).get("phase")
    if node is None or phase in ("Succeeded", "Failed"):
        return None
    since, why = lost_since(node)
    if since is None:
        return None
    lost = max(0, int((now - since).total_seconds()))
    if lost < grace:
        verdict = Verdict.WITHIN_GRACE
    else:
        verdict = Verdict.STORE_ON_NODE if tied else Verdict.FORCE_DELETE
    name = str((pod.get("metadata") or {}).get("name") or "")
    return NodeLoss(name, str(node["metadata"]["name"]), verdict, since, lost, why)


def losses(
    spec: EmbeddingImportSpec,
    pods: Iterable[Manifest],
    nodes: Mapping[str, Manifest | None],
    now: datetime,
) -> list[NodeLoss]:
    """Every pod of ours on a lost node (``nodes``: by name, as read)."""
    tied = store_on_node(spec)
    grace = spec.memory_policy.node_lost_seconds
    out = []
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name and (loss := judge(pod, nodes.get(node_name), tied, grace, now)):
            out.append(loss)
    return out


def requeue_after(found: Sequence[NodeLoss], grace: int) -> float | None:
    """When to look again: at the end of the shortest grace still running."""
    left = [grace - x.lost_seconds for x in found if x.verdict == Verdict.WITHIN_GRACE]
    return float(max(1, min(left))) if left else None


def with_condition(
    status: EmbeddingImportStatus, found: Sequence[NodeLoss], now: datetime, generation: int
) -> EmbeddingImportStatus:
    """``status`` with condition ``NodeLost``: True while a pod waits on a lost node (reason
    StoreOnLostNode) or is being force-deleted (reason ForceDeleted); False once none is; not
    added at all to an import that never met a lost node."""
    waiting = [x for x in found if x.verdict == Verdict.STORE_ON_NODE]
    deleted = [x for x in found if x.verdict == Verdict.FORCE_DELETE]
    old = next((c for c in status.conditions if c.type == NODE_LOST), None)
    conditions: list[Condition]
    if waiting or deleted:
        reason = ConditionReason.STORE_ON_LOST_NODE if waiting else ConditionReason.FORCE_DELETED
        text = "; ".join(x.message for x in (*waiting, *deleted))
        conditions = set_condition(status.conditions, NODE_LOST, "True", reason, text, now,
                                   generation)  # fmt: skip
    elif old is not None and old.status != "False":
        conditions = set_condition(status.conditions, NODE_LOST, "False",
                                   ConditionReason.NODES_HEALTHY,
                                   "no pod of this import is on a lost node", now,
                                   generation)  # fmt: skip
    else:
        return status
    return status.model_copy(update={"conditions": conditions})
