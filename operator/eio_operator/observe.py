"""What the operator sees of an importer pod, reduced to the facts the roll decision needs.

Pure: a pod manifest (a dict from the API or a watch event) in, a frozen ObservedPod out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eio_common import contract

CONTAINER = "importer"
# Waiting reasons that mean the pod will not start without someone fixing something.
STUCK_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


@dataclass(frozen=True)
class Termination:
    exit_code: int | None
    reason: str
    message: str = ""
    finished_at: datetime | None = None


@dataclass(frozen=True)
class ObservedPod:
    name: str
    uid: str
    shard: int
    attempt: int
    phase: str = "Pending"  # Pending, Running, Succeeded, Failed, Unknown
    created: datetime | None = None
    started: datetime | None = None
    deleting: bool = False  # metadata.deletionTimestamp is set
    deleting_since: datetime | None = None  # metadata.deletionTimestamp
    node: str = ""  # spec.nodeName: where it runs (or ran)
    terminated: Termination | None = None
    evicted: bool = False  # evicted, preempted or marked as a disruption target
    disruption: str = ""  # the DisruptionTarget condition's reason, e.g. PreemptionByScheduler
    waiting_reason: str = ""
    waiting_message: str = ""  # e.g. which Secret or ConfigMap is missing
    message: str = ""
    build_hash: str | None = None  # the spec's build hash when the pod was made (annotation)

    def ending_text(self) -> str:
        """ "pod X on node N to end (Terminating since T)": what a shard waits for."""
        where = f" on node {self.node}" if self.node else ""
        since = ""
        if self.deleting:
            since = " (Terminating" + (
                f" since {self.deleting_since.isoformat().replace('+00:00', 'Z')})"
                if self.deleting_since is not None
                else ")"
            )
        return f"pod {self.name}{where} to end{since}"

    @property
    def is_live(self) -> bool:
        """Still (or possibly) running: a new pod for the shard must wait for it."""
        return self.terminated is None and self.phase not in ("Succeeded", "Failed")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _int(value: Any, default: int = -1) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _container_state(
    status: Mapping[str, Any],
) -> tuple[Termination | None, datetime | None, str, str]:
    """The importer container's state: termination, start time, waiting reason and message."""
    container = next(
        (c for c in status.get("containerStatuses") or [] if c.get("name") == CONTAINER),
        None,
    )
    state = (container or {}).get("state") or {}
    if state.get("terminated") is not None:
        t = state["terminated"]
        code = t.get("exitCode")
        terminated = Termination(
            exit_code=int(code) if code is not None else None,
            reason=str(t.get("reason") or ""),
            message=str(t.get("message") or ""),
            finished_at=parse_time(t.get("finishedAt")),
        )
        return terminated, parse_time(t.get("startedAt")), "", ""
    if state.get("running") is not None:
        return None, parse_time(state["running"].get("startedAt")), "", ""
    waiting = state.get("waiting") or {}
    return None, None, str(waiting.get("reason") or ""), str(waiting.get("message") or "")


def observe_pod(pod: Mapping[str, Any]) -> ObservedPod | None:
    """Reduce a pod manifest; None if it is not one of our importer pods (labels missing)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    shard = _int(labels.get(contract.LABEL_SHARD))
    attempt = _int(labels.get(contract.LABEL_ATTEMPT))
    if shard < 0 or attempt < 0:
        return None
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    terminated, started, waiting_reason, waiting_message = _container_state(status)
    pod_reason = str(status.get("reason") or "")
    if terminated is None and phase in ("Succeeded", "Failed"):
        # Failed without a container state: evicted before start, or the node lost the pod.
        terminated = Termination(
            exit_code=0 if phase == "Succeeded" else None,
            reason=pod_reason or phase,
            message=str(status.get("message") or ""),
        )
    disruption = next(
        (
            str(c.get("reason") or "DisruptionTarget")
            for c in status.get("conditions") or []
            if c.get("type") == "DisruptionTarget" and c.get("status") == "True"
        ),
        "",
    )
    return ObservedPod(
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        shard=shard,
        attempt=attempt,
        phase=phase,
        created=parse_time(meta.get("creationTimestamp")),
        started=started or parse_time(status.get("startTime")),
        deleting=bool(meta.get("deletionTimestamp")),
        deleting_since=parse_time(meta.get("deletionTimestamp")),
        node=str((pod.get("spec") or {}).get("nodeName") or ""),
        terminated=terminated,
        evicted=pod_reason in ("Evicted", "Preempting", "Terminated") or bool(disruption),
        disruption=disruption,
        waiting_reason=waiting_reason,
        waiting_message=waiting_message,
        message=str(status.get("message") or ""),
        build_hash=(meta.get("annotations") or {}).get(contract.BUILD_HASH_ANNOTATION),
    )
