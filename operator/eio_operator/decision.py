"""The roll decision: one pure function from what is observed to what to do next, per shard.

``decide(spec, shard, pods, checkpoint, history, now, generation)`` looks at the shard's pods,
its checkpoint and its history (``ShardStatus`` from the import's status) and returns one
``Decision``: an action with a reason and message, the new history, the restart it counted (if
any), the pod to create (if any), pods to delete, and the events to post. No I/O, no clock:
the handlers apply the decision, most tests call this function directly.

The rules (docs/architecture.md has the same table):

| observed | restart cause | budget | next pod |
|---|---|---|---|
| reason OOMKilled (any exit code, even 0) | oomKilled | no (see growth) | at once |
| exit 0 and checkpoint complete (mode Once) | - (shard Succeeded) | - | none |
| exit 0 in mode Continuous (complete or not) | exited | only without progress | at once / backoff |
| exit 75 | threshold (planned roll) | no | at once |
| exit 137, reason not OOMKilled (SIGKILL) | killed | only without progress | at once / backoff |
| heartbeat above threshold > grace | overThreshold (pod deleted) | no (see growth) | when gone |
| heartbeat older than stallSeconds | stalled (operator deletes pod) | yes | backoff |
| evicted / preempted / deleted | evicted | no | at once |
| other exit (or exit 0 not complete) | crash | yes | backoff |
| exit 78 | - (import Failed, ConfigError) | - | none |

Memory-caused endings (75, OOM, overThreshold) *without checkpoint progress* count towards
``oomsBeforeGrow``; at that count the limit grows by ``growFactor`` up to ``maxMemoryLimit``,
and once it cannot grow each further one counts against the budget. Budget-counted endings
(``failuresWithoutProgress``) above ``retryBudget`` fail the import (BudgetExhausted). Both
counters reset when the checkpoint's progress mark advanced. A new pod is created only when no
pod of the shard is live, so a shard never has two running pods.

Mode Continuous changes one thing: no ending completes a shard. The importer follows its
source and never exits 0 on its own; if it does anyway, the next pod starts (``exited``, like
``killed``: at once after progress, against the budget with backoff without). A shard that
finished in mode Once starts following when the mode changes to Continuous. Everything else
(threshold, OOM, backstop, budget, suspend) is the same in both modes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from eio_operator import quantity
from eio_operator.models import (
    CheckpointRef,
    EmbeddingImportSpec,
    ProgressMark,
    RestartCause,
    ShardPhase,
    ShardStatus,
)
from eio_operator.observe import STUCK_WAITING, ObservedPod
from importer import contract
from importer.contract import Checkpoint


class Action(StrEnum):
    WAIT = "Wait"  # nothing to do now
    START = "Start"  # create a pod: first one, after backoff, after resume, or a lost create
    ROLL = "Roll"  # the pod ended, a restart was counted, the next pod starts now
    BACKOFF = "Backoff"  # the pod ended, a restart was counted, the next pod waits
    KILL = "Kill"  # backstop: delete a live pod (restart counted now, next pod once it is gone)
    COMPLETE = "Complete"  # the shard is done
    FAIL = "Fail"  # the shard (and so the import) failed
    SUSPEND = "Suspend"  # spec.suspend: delete the live pod, start none
    STOP = "Stop"  # another shard failed the import: delete the live pod, start none


class Reason(StrEnum):
    STARTED = "Started"
    RESTARTED = "Restarted"
    RESUMED = "Resumed"
    RETRYING = "Retrying"
    BACKOFF_EXPIRED = "BackoffExpired"
    THRESHOLD = "Threshold"
    OOM_KILLED = "OOMKilled"
    OVER_THRESHOLD = "OverThreshold"
    STALLED = "Stalled"
    EVICTED = "Evicted"
    KILLED = "Killed"
    EXITED = "Exited"  # Continuous: the importer exited 0 (it should follow for good)
    FOLLOWING = "Following"  # a finished shard follows its source after a switch to Continuous
    CRASH = "Crash"
    COMPLETED = "Completed"
    CONFIG_ERROR = "ConfigError"
    BUDGET_EXHAUSTED = "BudgetExhausted"
    SUSPENDED = "Suspended"
    STOPPED = "Stopped"
    RUNNING = "Running"
    PENDING = "Pending"
    POD_NOT_STARTING = "PodNotStarting"
    TERMINATING = "Terminating"
    BACKING_OFF = "BackingOff"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    MEMORY_LIMIT_RAISED = "MemoryLimitRaised"
    WAITING = "Waiting"  # running, but the importer reports it waits (e.g. Qdrant unreachable)


CAUSE_REASON = {
    RestartCause.THRESHOLD: Reason.THRESHOLD,
    RestartCause.OOM_KILLED: Reason.OOM_KILLED,
    RestartCause.OVER_THRESHOLD: Reason.OVER_THRESHOLD,
    RestartCause.STALLED: Reason.STALLED,
    RestartCause.EVICTED: Reason.EVICTED,
    RestartCause.KILLED: Reason.KILLED,
    RestartCause.EXITED: Reason.EXITED,
    RestartCause.CRASH: Reason.CRASH,
}
_MEMORY_CAUSES = (RestartCause.THRESHOLD, RestartCause.OOM_KILLED, RestartCause.OVER_THRESHOLD)
_BUDGET_CAUSES = (RestartCause.STALLED, RestartCause.CRASH)
# Not the importer's fault when work advanced (next pod at once, no budget); without progress
# they count against the budget with backoff like a crash, so none of them loops for good.
_BUDGET_UNLESS_PROGRESS = (RestartCause.KILLED, RestartCause.EXITED)


@dataclass(frozen=True)
class PodPlan:
    """The pod to create: which attempt, with which memory limit."""

    attempt: int
    memory_limit_bytes: int


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: Reason
    message: str
    shard: ShardStatus
    restart: RestartCause | None = None
    create: PodPlan | None = None
    delete: tuple[str, ...] = ()  # live pods to stop
    prune: tuple[str, ...] = ()  # old terminated pods beyond keepTerminatedPods
    requeue_after: float | None = None  # seconds until the decision may change by itself
    events: tuple[EventSpec, ...] = ()
    ended: str | None = None  # the pod whose ending this decision accounted for


@dataclass(frozen=True)
class _Ending:
    """Why the shard's newest pod ended; ``cause`` None for complete/config error."""

    reason: Reason
    message: str
    cause: RestartCause | None = None


# --------------------------------------------------------------------------------------------
def decide(
    spec: EmbeddingImportSpec,
    shard: int,
    pods: Sequence[ObservedPod],
    checkpoint: Checkpoint | None,
    history: ShardStatus,
    now: datetime,
    generation: int,
    *,
    import_name: str = "",
    import_failed: bool = False,
) -> Decision:
    """Decide what to do for one shard. Pure: same inputs, same decision."""
    policy = spec.memory_policy
    mine = sorted((p for p in pods if p.shard == shard), key=lambda p: p.attempt)
    h = _observe(history, shard, mine, checkpoint, import_name)
    current = next((p for p in mine if p.attempt == h.attempt), None)
    # work_mark, not progress_mark: it also moves when a run only got through part of one
    # record longer than a chunk, which is progress too (the next run resumes inside it).
    mark = checkpoint.work_mark() if checkpoint is not None else None

    # Terminal states. A failed shard retries once the spec changed (a new generation); a
    # finished shard of an import switched to Continuous starts following its source.
    if h.phase == ShardPhase.SUCCEEDED:
        if not spec.continuous:
            return _finish(
                h, Action.WAIT, Reason.SUCCEEDED, h.message, mine, policy.keep_terminated_pods
            )
        h = h.reopened()
    retrying = False
    if h.phase == ShardPhase.FAILED:
        if h.failed_generation == generation:
            return _finish(
                h, Action.WAIT, Reason.FAILED, h.message, mine, policy.keep_terminated_pods,
                delete=_stoppable(mine),
            )
        retrying = True
        h = h.reopened()

    blocked = Reason.SUSPENDED if spec.suspend else Reason.STOPPED if import_failed else None
    ending: _Ending | None = None
    kill: tuple[str, ...] = ()
    recreate = False

    if h.attempt > h.handled_attempt:  # the newest pod's ending is not accounted for yet
        if current is None:
            if blocked is not None:
                h = h.model_copy(update={"handled_attempt": h.attempt})
            elif h.pod_uid:
                ending = _Ending(
                    Reason.EVICTED,
                    f"pod {h.pod} disappeared before it terminated (deleted or evicted)",
                    RestartCause.EVICTED,
                )
            else:
                recreate = True  # created (or about to be) but never observed: create it again
        elif current.is_live:
            if blocked is not None:
                h = h.model_copy(update={"handled_attempt": h.attempt})
            elif current.deleting:
                return _finish(
                    h.model_copy(update={"phase": ShardPhase.TERMINATING}),
                    Action.WAIT, Reason.TERMINATING,
                    f"pod {current.name} is being deleted", mine, policy.keep_terminated_pods,
                )
            else:
                ending, over_since = _backstop(spec, h, current, checkpoint, now)
                h = h.model_copy(update={"over_threshold_since": over_since})
                if ending is None:
                    hb = _heartbeat_of(current, checkpoint)
                    waiting = hb.waiting if hb is not None else None
                    return _running(spec, h, current, now, over_since, mine, waiting)
                kill = (current.name,)
        else:
            ending = _classify(current, checkpoint, continuous=spec.continuous)

    restart: RestartCause | None = None
    events: list[EventSpec] = []
    ended = h.pod if ending is not None else None
    if ending is not None:
        h, restart, grown = _account(spec, h, ending, mark, now, generation)
        events.append(_ending_event(ending, h, shard))
        if grown is not None:
            events.append(
                EventSpec(
                    "Warning", Reason.MEMORY_LIMIT_RAISED,
                    f"shard {shard}: memory limit raised from {quantity.format_bytes(grown[0])} "
                    f"to {quantity.format_bytes(grown[1])} after {policy.ooms_before_grow} "
                    "memory-caused restarts without progress",
                )
            )

    live = [p for p in mine if p.is_live]
    keep = policy.keep_terminated_pods

    if h.phase == ShardPhase.SUCCEEDED:
        return _finish(h, Action.COMPLETE, Reason.COMPLETED, h.message, mine, keep,
                       events=events, ended=ended)
    if h.phase == ShardPhase.FAILED:
        return _finish(
            h, Action.FAIL, Reason(h.reason), h.message, mine, keep,
            delete=_stoppable(live), restart=restart, events=events, ended=ended,
        )
    if blocked is not None:
        stop = _stoppable(live)
        phase = ShardPhase.SUSPENDED if blocked == Reason.SUSPENDED else ShardPhase.STOPPED
        changed = bool(stop) or h.phase != phase or ending is not None
        msg = (
            "suspended: no importer pod runs; the checkpoint is kept"
            if phase == ShardPhase.SUSPENDED
            else "stopped because another shard failed the import"
        )
        h = h.model_copy(update={"phase": phase, "reason": blocked, "message": msg,
                                 "not_before": None, "over_threshold_since": None})
        action = (Action.SUSPEND if phase == ShardPhase.SUSPENDED else Action.STOP)
        if changed and restart is None:
            events.append(EventSpec("Normal" if phase == ShardPhase.SUSPENDED else "Warning",
                                    blocked, f"shard {shard}: {msg}"))
        return _finish(h, action if changed else Action.WAIT, blocked, msg, mine, keep,
                       delete=stop, restart=restart, events=events, ended=ended)
    if kill:
        h = h.model_copy(update={"phase": ShardPhase.TERMINATING})
        return _finish(h, Action.KILL, Reason(h.reason), h.message, mine, keep, delete=kill,
                       restart=restart, events=events, ended=ended)
    if live:
        h = h.model_copy(update={"phase": ShardPhase.TERMINATING})
        names = ", ".join(p.name for p in live)
        return _finish(h, Action.WAIT, Reason.TERMINATING,
                       f"waiting for {names} to terminate before the next attempt", mine, keep,
                       delete=_stoppable(live), restart=restart, events=events, ended=ended)

    # Nothing live: start the next pod, now or after the backoff.
    if not recreate and h.not_before is not None and now < h.not_before:
        wait = (h.not_before - now).total_seconds()
        h = h.model_copy(update={"phase": ShardPhase.BACKING_OFF})
        action = Action.BACKOFF if ending is not None else Action.WAIT
        msg = h.message if ending is not None else f"next attempt in {wait:.0f}s"
        return _finish(h, action, Reason(h.reason) if ending else Reason.BACKING_OFF, msg,
                       mine, keep, restart=restart, requeue_after=wait, events=events,
                       ended=ended)

    start_reason = _start_reason(history, h, retrying, ending)
    attempt = h.attempt if recreate else h.attempt + 1
    limit = _limit_in_force(spec, h)
    pod = contract.pod_name(import_name, shard, attempt)
    start_msg = f"started {pod} (attempt {attempt}, memory limit {quantity.format_bytes(limit)})"
    if ending is not None:
        start_msg = f"{h.message}; {start_msg}"
    h = h.model_copy(
        update={
            "attempt": attempt,
            "pod": pod,
            "pod_uid": None,
            "memory_limit": quantity.format_bytes(limit),
            "phase": ShardPhase.PENDING,
            "not_before": None,
            "over_threshold_since": None,
            "reason": start_reason if ending is None else h.reason,
            "message": start_msg,
        }
    )
    if ending is None:
        events.append(EventSpec("Normal", start_reason, f"shard {shard}: {start_msg}"))
    action = Action.ROLL if ending is not None else Action.START
    return _finish(h, action, Reason(h.reason), start_msg, mine, keep,
                   create=PodPlan(attempt, limit), restart=restart, events=events, ended=ended)


# --------------------------------------------------------------------------------------------
def _observe(
    history: ShardStatus,
    shard: int,
    mine: Sequence[ObservedPod],
    checkpoint: Checkpoint | None,
    import_name: str,
) -> ShardStatus:
    """Fold what is observed into the history: newest attempt, pod UID, checkpoint counters."""
    upd: dict[str, Any] = {
        "index": shard,
        "checkpoint_ref": CheckpointRef(
            name=contract.checkpoint_configmap_name(import_name, shard)
        ),
    }
    newest = mine[-1] if mine else None
    if newest is not None and newest.attempt > history.attempt:  # status lost or stale
        upd.update(attempt=newest.attempt, pod=newest.name, pod_uid=newest.uid)
    else:
        current = next((p for p in mine if p.attempt == history.attempt), None)
        if current is not None and current.uid:
            upd["pod_uid"] = current.uid
    if checkpoint is not None:
        upd.update(files_done=checkpoint.files_done, files_total=checkpoint.files_total)
    return history.model_copy(update=upd)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _heartbeat_of(pod: ObservedPod, checkpoint: Checkpoint | None) -> contract.Heartbeat | None:
    """The checkpoint's heartbeat if this pod wrote it (by pod name, else by attempt number)."""
    if checkpoint is None:
        return None
    hb = checkpoint.heartbeat
    if hb.pod == pod.name or (hb.pod is None and checkpoint.attempt == pod.attempt):
        return hb
    return None


def _limit_in_force(spec: EmbeddingImportSpec, h: ShardStatus) -> int:
    """Memory limit for the shard's next pod: the grown limit if any, never below the spec's."""
    base = spec.importer.limit_bytes
    grown = quantity.memory_bytes(h.memory_limit) if h.memory_limit else base
    return max(base, min(grown, spec.ceiling_bytes))


def _backstop(
    spec: EmbeddingImportSpec,
    h: ShardStatus,
    pod: ObservedPod,
    checkpoint: Checkpoint | None,
    now: datetime,
) -> tuple[_Ending | None, datetime | None]:
    """Operator backstop for a running pod: stalled heartbeat, or memory above the threshold."""
    if pod.phase != "Running":
        return None, None
    policy = spec.memory_policy
    hb = _heartbeat_of(pod, checkpoint)
    if policy.stall_seconds:
        seen = [t for t in (hb.time if hb else None, pod.started, pod.created) if t is not None]
        if seen:
            age = (now - max(_aware(t) for t in seen)).total_seconds()
            if age > policy.stall_seconds:
                return (
                    _Ending(
                        Reason.STALLED,
                        f"no heartbeat from {pod.name} for {age:.0f}s "
                        f"(stallSeconds {policy.stall_seconds}); deleting it",
                        RestartCause.STALLED,
                    ),
                    None,
                )
    limit = quantity.memory_bytes(h.memory_limit) if h.memory_limit else spec.importer.limit_bytes
    threshold = quantity.threshold_bytes(policy.threshold, limit)
    if threshold and hb is not None and hb.memory_bytes > threshold:
        since = h.over_threshold_since or now
        over = (now - since).total_seconds()
        if over >= policy.over_threshold_grace_seconds:
            return (
                _Ending(
                    Reason.OVER_THRESHOLD,
                    f"{pod.name} reports {quantity.format_bytes(hb.memory_bytes)} above the "
                    f"threshold {quantity.format_bytes(threshold)} for {over:.0f}s "
                    f"(overThresholdGraceSeconds {policy.over_threshold_grace_seconds}); "
                    "deleting it",
                    RestartCause.OVER_THRESHOLD,
                ),
                None,
            )
        return None, since
    return None, None


def _last_line(message: str) -> str:
    """The termination message's last line: with FallbackToLogsOnError the message is the log
    tail, and the importer's last line says why it stopped (e.g. what to fix for exit 78)."""
    lines = [ln for ln in message.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def _classify(pod: ObservedPod, checkpoint: Checkpoint | None, *, continuous: bool) -> _Ending:
    """Why a terminated pod ended. The kubelet's reason wins over the exit code: ``OOMKilled``
    is an OOM whatever the code (under cgroup v1 the kernel may kill only a child and the
    container exits with its shell's code, even 0); 137 without it is a SIGKILL from outside.
    In mode Continuous an exit 0 never finishes the shard: the next pod follows on."""
    t = pod.terminated
    assert t is not None
    code = t.exit_code
    detail = f": {_last_line(t.message)[:300]}" if t.message.strip() else ""
    if t.reason == "OOMKilled":
        shown = f" (exit code {code})" if code != contract.EXIT_OOM_KILLED else ""
        return _Ending(Reason.OOM_KILLED,
                       f"{pod.name} was OOM-killed at its memory limit{shown}",
                       RestartCause.OOM_KILLED)
    complete = checkpoint is not None and checkpoint.complete
    if code == contract.EXIT_OK and complete and not continuous:
        return _Ending(Reason.COMPLETED, f"{pod.name} finished the shard")
    if pod.evicted or pod.deleting:
        why = t.reason if t.reason and t.reason not in ("Error", "Completed") else "deleted"
        return _Ending(
            Reason.EVICTED, f"{pod.name} was {why.lower()}{detail}", RestartCause.EVICTED
        )
    if code == contract.EXIT_TEMPFAIL:
        return _Ending(Reason.THRESHOLD, f"{pod.name} exited 75 (planned roll at the memory "
                       "threshold or recycle point)", RestartCause.THRESHOLD)
    if code == contract.EXIT_CONFIG:
        return _Ending(Reason.CONFIG_ERROR,
                       f"{pod.name} exited 78 (bad configuration or unreadable sources){detail}; "
                       "fix the spec to retry")
    if code == contract.EXIT_OOM_KILLED:
        return _Ending(Reason.KILLED,
                       f"{pod.name} was killed by SIGKILL (exit 137, reason "
                       f"{t.reason or 'unset'}: not an OOM kill)", RestartCause.KILLED)
    if code == contract.EXIT_OK and continuous:
        return _Ending(Reason.EXITED, f"{pod.name} exited 0, but in mode Continuous the "
                       "importer follows its source for good; starting the next pod",
                       RestartCause.EXITED)
    if code == contract.EXIT_OK:
        return _Ending(Reason.CRASH, f"{pod.name} exited 0 but its checkpoint is not complete",
                       RestartCause.CRASH)
    what = f"exited {code}" if code is not None else f"failed ({t.reason or 'no exit code'})"
    return _Ending(Reason.CRASH, f"{pod.name} {what}{detail}", RestartCause.CRASH)


def _account(
    spec: EmbeddingImportSpec,
    h: ShardStatus,
    ending: _Ending,
    mark: tuple[int, int, int] | None,
    now: datetime,
    generation: int,
) -> tuple[ShardStatus, RestartCause | None, tuple[int, int] | None]:
    """Count an ending: progress, restart counters, memory growth, budget, backoff."""
    policy = spec.memory_policy
    progressed = mark is not None and mark > h.progress_mark.as_tuple()
    fails = 0 if progressed else h.failures_without_progress
    ooms = 0 if progressed else h.ooms_without_progress
    upd: dict[str, Any] = {
        "handled_attempt": h.attempt,
        "over_threshold_since": None,
        "not_before": None,
        "reason": ending.reason,
        "message": ending.message,
    }
    if progressed and mark is not None:
        upd["progress_mark"] = ProgressMark(files=mark[0], records=mark[1], chunks=mark[2])
    cause = ending.cause
    if cause is None:  # complete or config error: no restart
        if ending.reason == Reason.COMPLETED:
            upd["phase"] = ShardPhase.SUCCEEDED
        else:
            upd.update(phase=ShardPhase.FAILED, failed_generation=generation)
        upd.update(failures_without_progress=fails, ooms_without_progress=ooms)
        return h.model_copy(update=upd), None, None

    consume = cause in _BUDGET_CAUSES or (cause in _BUDGET_UNLESS_PROGRESS and not progressed)
    grown: tuple[int, int] | None = None
    if cause in _MEMORY_CAUSES and not progressed:
        ooms += 1
        if ooms >= policy.ooms_before_grow:
            current = _limit_in_force(spec, h)
            target = min(quantity.round_up_mi(current * policy.grow_factor), spec.ceiling_bytes)
            if target > current:
                grown = (current, target)
                upd["memory_limit"] = quantity.format_bytes(target)
                ooms = 0
            else:
                consume = True
    if consume:
        fails += 1
    upd.update(
        failures_without_progress=fails,
        ooms_without_progress=ooms,
        restarts=h.restarts + 1,
    )
    message = ending.message
    if grown is not None:
        message += (f"; memory limit raised to {quantity.format_bytes(grown[1])} after "
                    f"{policy.ooms_before_grow} restarts without progress")
    if fails > policy.retry_budget:
        upd.update(
            phase=ShardPhase.FAILED,
            failed_generation=generation,
            reason=Reason.BUDGET_EXHAUSTED,
            message=f"{message}; {fails} failures without progress exceed retryBudget "
            f"{policy.retry_budget}; fix the cause and change the spec to retry",
        )
    elif consume:
        delay = min(policy.backoff_seconds * 2 ** (fails - 1), policy.max_backoff_seconds)
        upd["message"] = (f"{message}; failure {fails} of {policy.retry_budget} without "
                          f"progress, next attempt in {delay}s")
        if delay > 0:
            upd["not_before"] = now + timedelta(seconds=delay)
    else:
        upd["message"] = message
    return h.model_copy(update=upd), cause, grown


def _ending_event(ending: _Ending, h: ShardStatus, shard: int) -> EventSpec:
    planned = ending.reason in (Reason.THRESHOLD, Reason.COMPLETED)
    return EventSpec("Normal" if planned else "Warning", h.reason, f"shard {shard}: {h.message}")


def _start_reason(
    history: ShardStatus, h: ShardStatus, retrying: bool, ending: _Ending | None
) -> Reason:
    if retrying or history.phase == ShardPhase.STOPPED:
        return Reason.RETRYING
    if history.phase == ShardPhase.SUSPENDED:
        return Reason.RESUMED
    if history.phase == ShardPhase.SUCCEEDED:
        return Reason.FOLLOWING
    if history.phase == ShardPhase.BACKING_OFF:
        return Reason.BACKOFF_EXPIRED
    if h.attempt == 0:
        return Reason.STARTED
    return Reason.RESTARTED


def _running(
    spec: EmbeddingImportSpec,
    h: ShardStatus,
    pod: ObservedPod,
    now: datetime,
    over_since: datetime | None,
    mine: Sequence[ObservedPod],
    waiting: str | None = None,
) -> Decision:
    keep = spec.memory_policy.keep_terminated_pods
    # A live pod of another attempt next to the current one must not exist: stop it.
    dup = _stoppable([p for p in mine if p.attempt != pod.attempt])
    if pod.phase == "Running":
        msg = f"{pod.name} is running"
        reason = Reason.RUNNING
        if waiting:
            msg += f"; waiting: {waiting[:300]}"
            reason = Reason.WAITING
        if over_since is not None:
            msg += (f"; memory above the threshold since {over_since.isoformat()}, waiting for "
                    "the importer's planned exit")
        h = h.model_copy(update={"phase": ShardPhase.RUNNING, "message": msg,
                                 "reason": reason})
        requeue = None
        if over_since is not None:
            grace = spec.memory_policy.over_threshold_grace_seconds
            requeue = max(1.0, grace - (now - over_since).total_seconds())
        return _finish(h, Action.WAIT, Reason.RUNNING, msg, mine, keep, requeue_after=requeue,
                       delete=dup)
    if pod.waiting_reason in STUCK_WAITING:
        msg = f"{pod.name} cannot start: {pod.waiting_reason}" + (
            f" ({pod.waiting_message[:300]})" if pod.waiting_message else ""
        )
        h = h.model_copy(update={"phase": ShardPhase.PENDING, "message": msg,
                                 "reason": Reason.POD_NOT_STARTING})
        return _finish(h, Action.WAIT, Reason.POD_NOT_STARTING, msg, mine, keep, delete=dup)
    msg = f"{pod.name} is pending" + (f" ({pod.waiting_reason})" if pod.waiting_reason else "")
    h = h.model_copy(update={"phase": ShardPhase.PENDING, "message": msg,
                             "reason": Reason.PENDING})
    return _finish(h, Action.WAIT, Reason.PENDING, msg, mine, keep, delete=dup)


def _stoppable(pods: Sequence[ObservedPod]) -> tuple[str, ...]:
    """Live pods not already being deleted."""
    return tuple(p.name for p in pods if p.is_live and not p.deleting)


def _prune(mine: Sequence[ObservedPod], h: ShardStatus, keep: int) -> tuple[str, ...]:
    """Terminated, accounted-for pods beyond the newest ``keep`` (kept for their logs)."""
    done = [p for p in mine if not p.is_live and not p.deleting and p.attempt <= h.handled_attempt]
    done.sort(key=lambda p: p.attempt, reverse=True)
    return tuple(p.name for p in done[keep:])


def _finish(
    h: ShardStatus,
    action: Action,
    reason: Reason,
    message: str,
    mine: Sequence[ObservedPod],
    keep: int,
    *,
    delete: tuple[str, ...] = (),
    create: PodPlan | None = None,
    restart: RestartCause | None = None,
    requeue_after: float | None = None,
    events: Sequence[EventSpec] = (),
    ended: str | None = None,
) -> Decision:
    return Decision(
        action=action,
        reason=reason,
        message=message,
        shard=h,
        restart=restart,
        create=create,
        delete=delete,
        prune=_prune(mine, h, keep),
        requeue_after=requeue_after,
        events=tuple(events),
        ended=ended,
    )
