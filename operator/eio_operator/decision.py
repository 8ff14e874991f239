"""The roll decision: one pure function from what is observed to what to do next, per shard.

``decide(spec, shard, pods, checkpoint, history, now, generation)`` looks at the shard's pods,
its checkpoint and its history (``ShardStatus`` from the import's status) and returns one
``Decision``: an action with a reason and message, the new history, the restart it counted (if
any), the pod to create (if any), pods to delete, and the events to post. No I/O, no clock:
the handlers apply the decision, most tests call this function directly.

The rules, per ending of a shard's newest pod (this table is the one description;
docs/architecture.md carries a copy that a unit test keeps identical):

| observed | reason | restart cause | budget | next pod |
|---|---|---|---|---|
| Once: checkpoint `complete`, any pod state⁴ | Completed | - (shard Succeeded) | - | none |
| reason `OOMKilled`, whatever the exit code | OOMKilled | oomKilled | no¹ | at once |
| Once: exit 0, checkpoint not complete | Crash | crash | yes | after backoff |
| Continuous: exit 0 (complete or not) | Exited | exited | no progress² | at once / backoff |
| exit 75 | Threshold | threshold (planned roll) | no¹ | at once |
| exit 137, reason not `OOMKilled` | Killed | killed | no progress² | at once / backoff |
| heartbeat memory above threshold > grace | OverThreshold | overThreshold³ | no¹ | when gone |
| no heartbeat (nor start) for `stallSeconds` | Stalled | stalled³ | no progress² | gone/backoff |
| exit 79 (a newer attempt holds the fence) | Superseded | - (not a restart) | no | at once |
| live pod made for other build fields (model, chunking...) | SpecChanged | - | no | when gone |
| evicted, preempted, deleted by someone else, or gone | Evicted | evicted | no | at once |
| exit 78 | ConfigError | - (import Failed) | - | when the spec changes |
| any other exit | Crash | crash | yes | after backoff |

¹ Memory-caused endings (75, OOM, overThreshold) *without checkpoint progress* count towards
``oomsBeforeGrow``; at that count the limit grows by ``growFactor`` up to ``maxMemoryLimit``,
and once it cannot grow each further one counts against the budget.
² Not the importer's fault when work advanced (next pod at once, no budget); without progress
they count against the budget with backoff like a crash, so none of them loops for good.
³ The operator's health check of a running pod (``_check_health``) deletes it: memory above
``threshold`` in its heartbeat for ``overThresholdGraceSeconds``, or no heartbeat for
``stallSeconds``.
⁴ Checked first, for a live, terminated, unknown or vanished pod alike: the importer writes
``complete`` only after the store acknowledged (and flushed) every point, so nothing is left to
do. A running pod with a fresh heartbeat is left to exit 0 (it does so right after writing
``complete``); any other live pod (stalled, terminating) is deleted, and the shard does not wait
for it to end. Only a checkpoint of
mode Once (``follow`` false) written by the current attempt or a later one counts; in a rebuild
of several shards, not one that still waits for the operator's switch or retire order
(``eio_operator.switch``): the shard is done only after its retire.

Budget-counted endings (``failuresWithoutProgress``) above ``retryBudget`` fail the import
(BudgetExhausted). Both counters reset when the checkpoint's progress mark advanced. A new pod
is created only when no pod of the shard is live, so a shard never has two running pods.

Mode Continuous changes one thing: no ending completes a shard. The importer follows its
source and never exits 0 on its own; if it does anyway, the next pod starts (``exited``, like
``killed``). A shard that finished in mode Once starts following when the mode changes to
Continuous. Everything else (threshold, OOM, health check, budget, suspend) is the same in
both modes.

The steps of :func:`decide`, each a function below: fold the observation into the history
(``_observe``), settle terminal states (``_reopen``), see what became of the newest pod
(``_see_newest``, with the operator's health check of a running pod, ``_check_health``),
count its ending (``_count``/``_account``), then choose the next step (``_next``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from eio_common import contract, quantity
from eio_common.contract import Checkpoint
from eio_operator.models import (
    CheckpointRef,
    EmbeddingImportSpec,
    ProgressMark,
    RestartCause,
    ShardPhase,
    ShardStatus,
)
from eio_operator.observe import STUCK_WAITING, ObservedPod
from eio_operator.reasons import (
    EndReason,
    EventReason,
    ShardReason,
    StartReason,
    StateReason,
    shard_reason,
)


class Action(StrEnum):
    WAIT = "Wait"  # nothing to do now
    START = "Start"  # create a pod: first one, after backoff, after resume, or a lost create
    ROLL = "Roll"  # the pod ended, a restart was counted, the next pod starts now
    BACKOFF = "Backoff"  # the pod ended, a restart was counted, the next pod waits
    KILL = "Kill"  # health check: delete a live pod (restart counted now, next pod once gone)
    COMPLETE = "Complete"  # the shard is done
    FAIL = "Fail"  # the shard (and so the import) failed
    SUSPEND = "Suspend"  # spec.suspend: delete the live pod, start none
    STOP = "Stop"  # another shard failed the import: delete the live pod, start none


_MEMORY_CAUSES = (RestartCause.THRESHOLD, RestartCause.OOM_KILLED, RestartCause.OVER_THRESHOLD)
_BUDGET_CAUSES = (RestartCause.CRASH,)
# Not the importer's fault when work advanced (next pod at once, no budget); without progress
# they count against the budget with backoff like a crash, so none of them loops for good. A
# stall after progress is a pod that cannot report (its node went silent), not a failure.
_BUDGET_UNLESS_PROGRESS = (RestartCause.KILLED, RestartCause.EXITED, RestartCause.STALLED)


@dataclass(frozen=True)
class PodPlan:
    """The pod to create: which attempt, with which memory limit."""

    attempt: int
    memory_limit_bytes: int


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal or Warning
    reason: ShardReason | EventReason
    message: str


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: ShardReason
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

    reason: EndReason
    message: str
    cause: RestartCause | None = None


@dataclass(frozen=True)
class _Seen:
    """What became of the newest pod: ``h`` updated, and the ending to count (if any)."""

    h: ShardStatus
    ending: _Ending | None = None
    kill: tuple[str, ...] = ()  # live pod the health check stops
    recreate: bool = False  # created (or about to be) but never observed: create it again


@dataclass(frozen=True)
class _Counted:
    """The accounting of an ending, carried into the decision (empty when nothing ended)."""

    restart: RestartCause | None = None
    events: tuple[EventSpec, ...] = ()
    ended: str | None = None  # the pod whose ending was counted


@dataclass(frozen=True)
class _Shard:
    """The inputs of one decision, fixed while it is made."""

    spec: EmbeddingImportSpec
    index: int
    mine: tuple[ObservedPod, ...]  # the shard's pods, oldest attempt first
    checkpoint: Checkpoint | None
    history: ShardStatus  # as read from the status
    now: datetime
    generation: int
    import_name: str
    blocked: StateReason | None  # SUSPENDED (spec.suspend) or STOPPED (the import failed)
    fence: int | None = None  # the checkpoint ConfigMap's fence: the shard's current attempt

    def finish(
        self,
        h: ShardStatus,
        action: Action,
        reason: ShardReason,
        message: str,
        *,
        delete: tuple[str, ...] = (),
        create: PodPlan | None = None,
        requeue_after: float | None = None,
        counted: _Counted = _Counted(),
    ) -> Decision:
        keep = self.spec.memory_policy.keep_terminated_pods
        return Decision(
            action,
            reason,
            message,
            h,
            counted.restart,
            create,
            delete,
            _prune(self.mine, h, keep),
            requeue_after,
            counted.events,
            counted.ended,
        )


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
    fence: int | None = None,
) -> Decision:
    """Decide what to do for one shard. Pure: same inputs, same decision. ``fence``: the
    attempt the checkpoint ConfigMap's fence names (a new attempt is never below it)."""
    s = _Shard(
        spec=spec,
        index=shard,
        mine=tuple(sorted((p for p in pods if p.shard == shard), key=lambda p: p.attempt)),
        checkpoint=checkpoint,
        history=history,
        now=now,
        generation=generation,
        import_name=import_name,
        blocked=(
            StateReason.SUSPENDED
            if spec.suspend
            else StateReason.STOPPED
            if import_failed
            else None
        ),
        fence=fence,
    )
    reopened = _reopen(s, _observe(history, shard, s.mine, checkpoint, import_name))
    if isinstance(reopened, Decision):
        return reopened
    h, retrying = reopened
    seen = _finished(s, h) or _see_newest(s, h)
    if isinstance(seen, Decision):
        return seen
    h, counted = _count(s, seen)
    return _next(s, h, seen, counted, retrying)


def _observe(
    history: ShardStatus,
    shard: int,
    mine: Sequence[ObservedPod],
    checkpoint: Checkpoint | None,
    import_name: str,
) -> ShardStatus:
    """Fold what is observed into the history: newest attempt, pod UID, checkpoint counters."""
    h = history.evolve(
        index=shard,
        checkpoint_ref=CheckpointRef(name=contract.checkpoint_configmap_name(import_name, shard)),
    )
    newest = mine[-1] if mine else None
    if newest is not None and newest.attempt > history.attempt:  # status lost or stale
        h = h.evolve(attempt=newest.attempt, pod=newest.name, pod_uid=newest.uid)
    else:
        current = next((p for p in mine if p.attempt == history.attempt), None)
        if current is not None and current.uid:
            h = h.evolve(pod_uid=current.uid)
    if checkpoint is not None:
        h = h.evolve(files_done=checkpoint.files_done, files_total=checkpoint.files_total)
    return h


def _reopen(s: _Shard, h: ShardStatus) -> Decision | tuple[ShardStatus, bool]:
    """Terminal states. A failed shard retries once the spec changed (a new generation); a
    finished shard of an import switched to Continuous starts following its source. Returns
    the history to go on with and whether it is a retry of a failed shard."""
    if h.phase == ShardPhase.SUCCEEDED:
        rebuild = h.build_hash not in (None, s.spec.build_hash)
        if not s.spec.continuous and not rebuild:
            return s.finish(h, Action.WAIT, StateReason.SUCCEEDED, h.message)
        return h.reopened(), False
    if h.phase == ShardPhase.FAILED:
        if h.failed_generation == s.generation:
            return s.finish(
                h, Action.WAIT, StateReason.FAILED, h.message, delete=_stoppable(s.mine)
            )
        return h.reopened(), True
    return h, False


def _finished(s: _Shard, h: ShardStatus) -> _Seen | None:
    """Mode Once: a checkpoint that says complete completes the shard, whatever became of its
    pod (stalled, terminating on a silent node, gone): the importer writes ``complete`` only
    after the store acknowledged every point. A live pod with a fresh heartbeat is about to
    exit 0 and is waited for; other live pods are deleted, never waited for."""
    cp = s.checkpoint
    if s.spec.continuous or cp is None or not cp.complete or cp.follow or cp.attempt < h.attempt:
        return None
    if s.spec.switch_on_order and _awaits_order(cp):
        return None  # its new version waits for the switch, or its old ones for the retire
    current = next((p for p in s.mine if p.attempt == cp.attempt), None)
    if (
        current is not None
        and current.is_live
        and not current.deleting
        and (_stalled(s, current, _heartbeat_of(current, cp)) is None)
    ):
        return None  # a healthy pod exits 0 right after: never kill an importer that succeeded
    t = current.terminated if current is not None else None
    if current is not None and t is not None and t.exit_code == contract.EXIT_OK:
        msg = f"{current.name} finished the shard"
    else:
        name = current.name if current is not None else f"attempt {cp.attempt}"
        state = (
            "is gone"
            if current is None
            else "is terminating"
            if current.deleting
            else "is still live"
            if current.is_live
            else "ended without exit 0"
        )
        msg = (
            f"the checkpoint of {name} says complete ({cp.files_done}/{cp.files_total} "
            f"files); its pod {state}, which does not matter"
        )
    ending = _Ending(EndReason.COMPLETED, msg)
    return _Seen(h.evolve(attempt=cp.attempt), ending=ending, kill=_stoppable(s.mine))


def _awaits_order(cp: Checkpoint) -> bool:
    """A shard of a several-shard rebuild is done only after the operator's orders: its new
    version waits for the switch (``target`` set) or its old ones for the retire
    (``retiring``), whatever ``complete`` says (eio_operator.switch)."""
    b = cp.build
    return b is not None and (b.target is not None or bool(b.retiring))


def _see_newest(s: _Shard, h: ShardStatus) -> Decision | _Seen:
    """What became of the newest pod, if its ending is not accounted for yet."""
    if h.attempt <= h.handled_attempt:
        return _Seen(h)
    current = next((p for p in s.mine if p.attempt == h.attempt), None)
    if current is not None and not current.is_live:
        return _Seen(h, ending=_classify(current, s.checkpoint, continuous=s.spec.continuous))
    if s.blocked is not None:  # suspended or stopped: no ending to count
        return _Seen(h.evolve(handled_attempt=h.attempt))
    if current is None:
        if not h.pod_uid:
            return _Seen(h, recreate=True)
        return _Seen(
            h,
            ending=_Ending(
                EndReason.EVICTED,
                f"pod {h.pod} disappeared before it terminated (deleted or evicted)",
                RestartCause.EVICTED,
            ),
        )
    if current.deleting:
        msg = f"waiting for {current.ending_text()}"
        return s.finish(
            h.evolve(phase=ShardPhase.TERMINATING, message=msg),
            Action.WAIT,
            StateReason.TERMINATING,
            msg,
        )
    changed = _spec_changed(s, current)
    if changed is not None:
        return _Seen(h, ending=changed, kill=(current.name,))
    ending, over_since = _check_health(s, h, current)
    h = h.evolve(over_threshold_since=over_since)
    if ending is None:
        hb = _heartbeat_of(current, s.checkpoint)
        return _running(s, h, current, over_since, hb.waiting if hb is not None else None)
    return _Seen(h, ending=ending, kill=(current.name,))


def _spec_changed(s: _Shard, pod: ObservedPod) -> _Ending | None:
    """The live pod was made for other build fields (model, chunking, format): end it
    gracefully (it checkpoints on SIGTERM) so the next one fills a new version. Not a
    restart. A pod without the annotation (an older operator's) is left alone."""
    if pod.build_hash in (None, s.spec.build_hash):
        return None
    return _Ending(
        EndReason.SPEC_CHANGED,
        f"{pod.name} was started with other build settings (model, chunking or format); "
        "ending it gracefully: the next pod fills a new version of the collection while "
        "searches keep reading the current one",
    )


def _count(s: _Shard, seen: _Seen) -> tuple[ShardStatus, _Counted]:
    """Account for the newest pod's ending, if any: counters, memory growth, events."""
    if seen.ending is None:
        return seen.h, _Counted()
    if seen.ending.reason in (EndReason.SUPERSEDED, EndReason.SPEC_CHANGED):  # not restarts
        h = seen.h.evolve(
            handled_attempt=seen.h.attempt,
            reason=seen.ending.reason,
            message=seen.ending.message,
            over_threshold_since=None,
        )
        event = EventSpec("Normal", seen.ending.reason, f"shard {s.index}: {h.message}")
        return h, _Counted(None, (event,), ended=seen.h.pod)
    # work_mark, not progress_mark: it also moves when a run only got through part of one
    # record longer than a chunk, which is progress too (the next run resumes inside it).
    mark = s.checkpoint.work_mark() if s.checkpoint is not None else None
    h, restart, grown = _account(s.spec, seen.h, seen.ending, mark, s.now, s.generation)
    planned = seen.ending.reason in (EndReason.THRESHOLD, EndReason.COMPLETED)
    events = [
        EventSpec(
            "Normal" if planned else "Warning",
            shard_reason(h.reason, seen.ending.reason),
            f"shard {s.index}: {h.message}",
        )
    ]
    if grown is not None:
        events.append(
            EventSpec(
                "Warning",
                EventReason.MEMORY_LIMIT_RAISED,
                f"shard {s.index}: memory limit raised from {quantity.format_bytes(grown[0])} "
                f"to {quantity.format_bytes(grown[1])} after "
                f"{s.spec.memory_policy.ooms_before_grow} memory-caused restarts without progress",
            )
        )
    return h, _Counted(restart, tuple(events), ended=seen.h.pod)


def _next(s: _Shard, h: ShardStatus, seen: _Seen, counted: _Counted, retrying: bool) -> Decision:
    """The next step once any ending is counted: finish, hold, wait for live pods to go, back
    off, or start the next pod (only when no pod of the shard is live)."""
    if h.phase == ShardPhase.SUCCEEDED:
        return s.finish(
            h, Action.COMPLETE, EndReason.COMPLETED, h.message, delete=seen.kill, counted=counted
        )
    live = [p for p in s.mine if p.is_live]
    if h.phase == ShardPhase.FAILED:
        return s.finish(
            h,
            Action.FAIL,
            shard_reason(h.reason, StateReason.FAILED),
            h.message,
            delete=_stoppable(live),
            counted=counted,
        )
    if s.blocked is not None:
        return _hold(s, s.blocked, h, seen, counted, live)
    if seen.kill:
        assert seen.ending is not None
        return s.finish(
            h.evolve(phase=ShardPhase.TERMINATING),
            Action.KILL,
            shard_reason(h.reason, seen.ending.reason),
            h.message,
            delete=seen.kill,
            counted=counted,
        )
    if live:
        waits = f"waiting for {', '.join(p.ending_text() for p in live)} before the next attempt"
        msg = f"{h.message}; {waits}" if seen.ending is not None else waits
        return s.finish(
            h.evolve(phase=ShardPhase.TERMINATING, message=msg),
            Action.WAIT,
            StateReason.TERMINATING,
            msg,
            delete=_stoppable(live),
            counted=counted,
        )
    if not seen.recreate and h.not_before is not None and s.now < h.not_before:
        return _backoff(s, h, seen, counted, (h.not_before - s.now).total_seconds())
    return _start(s, h, seen, counted, retrying)


def _backoff(s: _Shard, h: ShardStatus, seen: _Seen, counted: _Counted, wait: float) -> Decision:
    """The shard backs off ``wait`` seconds before its next attempt."""
    h = h.evolve(phase=ShardPhase.BACKING_OFF)
    if seen.ending is not None:
        return s.finish(
            h,
            Action.BACKOFF,
            shard_reason(h.reason, seen.ending.reason),
            h.message,
            requeue_after=wait,
            counted=counted,
        )
    return s.finish(
        h,
        Action.WAIT,
        StateReason.BACKING_OFF,
        f"next attempt in {wait:.0f}s",
        requeue_after=wait,
        counted=counted,
    )


def _hold(
    s: _Shard,
    blocked: StateReason,
    h: ShardStatus,
    seen: _Seen,
    counted: _Counted,
    live: Sequence[ObservedPod],
) -> Decision:
    """spec.suspend, or another shard failed the import: stop the live pods, start none."""
    suspended = blocked == StateReason.SUSPENDED
    phase = ShardPhase.SUSPENDED if suspended else ShardPhase.STOPPED
    stop = _stoppable(live)
    changed = bool(stop) or h.phase != phase or seen.ending is not None
    msg = (
        "suspended: no importer pod runs; the checkpoint is kept"
        if suspended
        else "stopped because another shard failed the import"
    )
    h = h.evolve(
        phase=phase, reason=blocked, message=msg, not_before=None, over_threshold_since=None
    )
    if changed and counted.restart is None:
        event = EventSpec("Normal" if suspended else "Warning", blocked, f"shard {s.index}: {msg}")
        counted = replace(counted, events=(*counted.events, event))
    action = (Action.SUSPEND if suspended else Action.STOP) if changed else Action.WAIT
    return s.finish(h, action, blocked, msg, delete=stop, counted=counted)


def _start(s: _Shard, h: ShardStatus, seen: _Seen, counted: _Counted, retrying: bool) -> Decision:
    """Create the next pod (or the same attempt again, when its create was lost)."""
    # Never below the fence: a pod of an attempt the fence is above would stop at once.
    attempt = max(h.attempt if seen.recreate else h.attempt + 1, s.fence or 0)
    limit = _limit_in_force(s.spec, h)
    pod = contract.pod_name(s.import_name, s.index, attempt)
    msg = f"started {pod} (attempt {attempt}, memory limit {quantity.format_bytes(limit)})"
    reason: ShardReason
    if seen.ending is not None:
        action, reason, msg = (
            Action.ROLL,
            shard_reason(h.reason, seen.ending.reason),
            (f"{h.message}; {msg}"),
        )
    else:
        action, reason = Action.START, _start_reason(s.history, h, retrying, s.spec.continuous)
        event = EventSpec("Normal", reason, f"shard {s.index}: {msg}")
        counted = replace(counted, events=(*counted.events, event))
    h = h.evolve(
        attempt=attempt,
        pod=pod,
        pod_uid=None,
        memory_limit=quantity.format_bytes(limit),
        phase=ShardPhase.PENDING,
        not_before=None,
        over_threshold_since=None,
        reason=reason,
        message=msg,
        build_hash=s.spec.build_hash,
    )
    return s.finish(h, action, reason, msg, create=PodPlan(attempt, limit), counted=counted)


def _start_reason(
    history: ShardStatus, h: ShardStatus, retrying: bool, continuous: bool
) -> StartReason:
    if retrying or history.phase == ShardPhase.STOPPED:
        return StartReason.RETRYING
    if history.phase == ShardPhase.SUSPENDED:
        return StartReason.RESUMED
    if history.phase == ShardPhase.SUCCEEDED:  # Continuous now, or Once with new settings
        return StartReason.FOLLOWING if continuous else StartReason.RESTARTED
    if history.phase == ShardPhase.BACKING_OFF:
        return StartReason.BACKOFF_EXPIRED
    if h.attempt == 0:
        return StartReason.STARTED
    return StartReason.RESTARTED


def _running(
    s: _Shard,
    h: ShardStatus,
    pod: ObservedPod,
    over_since: datetime | None,
    waiting: str | None,
) -> Decision:
    """The newest pod is live and healthy: report it running, pending or not starting."""
    # A live pod of another attempt next to the current one must not exist: stop it.
    dup = _stoppable([p for p in s.mine if p.attempt != pod.attempt])
    if pod.phase == "Running":
        msg, reason = f"{pod.name} is running", StateReason.RUNNING
        if waiting:
            msg, reason = f"{msg}; waiting: {waiting[:300]}", StateReason.WAITING
        requeue = None
        if over_since is not None:
            msg += (
                f"; memory above the threshold since {over_since.isoformat()}, waiting for "
                "the importer's planned exit"
            )
            grace = s.spec.memory_policy.over_threshold_grace_seconds
            requeue = max(1.0, grace - (s.now - over_since).total_seconds())
        h = h.evolve(phase=ShardPhase.RUNNING, message=msg, reason=reason)
        return s.finish(h, Action.WAIT, StateReason.RUNNING, msg, requeue_after=requeue, delete=dup)
    if pod.waiting_reason in STUCK_WAITING:
        msg = f"{pod.name} cannot start: {pod.waiting_reason}" + (
            f" ({pod.waiting_message[:300]})" if pod.waiting_message else ""
        )
        reason = StateReason.POD_NOT_STARTING
    else:
        msg = f"{pod.name} is pending" + (f" ({pod.waiting_reason})" if pod.waiting_reason else "")
        reason = StateReason.PENDING
    h = h.evolve(phase=ShardPhase.PENDING, message=msg, reason=reason)
    return s.finish(h, Action.WAIT, reason, msg, delete=dup)


# --------------------------------------------------------------------------------------------
def _check_health(
    s: _Shard, h: ShardStatus, pod: ObservedPod
) -> tuple[_Ending | None, datetime | None]:
    """The operator's health check of a running pod (the importer's own checks may be hung):
    a stalled heartbeat, or memory above the threshold for longer than the grace period.
    Returns the ending (the pod is then deleted) and since when memory has been above."""
    if pod.phase != "Running":
        return None, None
    hb = _heartbeat_of(pod, s.checkpoint)
    stalled = _stalled(s, pod, hb)
    if stalled is not None:
        return stalled, None
    policy = s.spec.memory_policy
    limit = quantity.memory_bytes(h.memory_limit) if h.memory_limit else s.spec.importer.limit_bytes
    threshold = quantity.threshold_bytes(policy.threshold, limit)
    if not threshold or hb is None or hb.memory_bytes <= threshold:
        return None, None
    since = h.over_threshold_since or s.now
    over = (s.now - since).total_seconds()
    if over < policy.over_threshold_grace_seconds:
        return None, since
    return _Ending(
        EndReason.OVER_THRESHOLD,
        f"{pod.name} reports {quantity.format_bytes(hb.memory_bytes)} above the "
        f"threshold {quantity.format_bytes(threshold)} for {over:.0f}s "
        f"(overThresholdGraceSeconds {policy.over_threshold_grace_seconds}); deleting it",
        RestartCause.OVER_THRESHOLD,
    ), None


def _stalled(s: _Shard, pod: ObservedPod, hb: contract.Heartbeat | None) -> _Ending | None:
    """No sign of life (heartbeat, else start or creation) for longer than stallSeconds."""
    stall = s.spec.memory_policy.stall_seconds
    seen = [t for t in (hb.time if hb else None, pod.started, pod.created) if t is not None]
    if not stall or not seen:
        return None
    age = (s.now - max(_aware(t) for t in seen)).total_seconds()
    if age <= stall:
        return None
    return _Ending(
        EndReason.STALLED,
        f"no heartbeat from {pod.name} for {age:.0f}s (stallSeconds {stall}); deleting it",
        RestartCause.STALLED,
    )


def _account(
    spec: EmbeddingImportSpec,
    h: ShardStatus,
    ending: _Ending,
    mark: tuple[int, int, int] | None,
    now: datetime,
    generation: int,
) -> tuple[ShardStatus, RestartCause | None, tuple[int, int] | None]:
    """Count an ending: progress, restart counters, memory growth, budget, backoff. Returns
    the new history, the restart counted (None: no restart) and the limit grown (from, to)."""
    progressed = mark is not None and mark > h.progress_mark.as_tuple()
    h = h.evolve(
        handled_attempt=h.attempt,
        over_threshold_since=None,
        not_before=None,
        reason=ending.reason,
        message=ending.message,
        failures_without_progress=0 if progressed else h.failures_without_progress,
        ooms_without_progress=0 if progressed else h.ooms_without_progress,
    )
    if progressed and mark is not None:
        h = h.evolve(progress_mark=ProgressMark(files=mark[0], records=mark[1], chunks=mark[2]))
    cause = ending.cause
    if cause is None:  # complete or config error: no restart
        if ending.reason == EndReason.COMPLETED:
            return h.evolve(phase=ShardPhase.SUCCEEDED), None, None
        return h.evolve(phase=ShardPhase.FAILED, failed_generation=generation), None, None
    consume = cause in _BUDGET_CAUSES or (cause in _BUDGET_UNLESS_PROGRESS and not progressed)
    grown: tuple[int, int] | None = None
    if cause in _MEMORY_CAUSES and not progressed:
        h, grown = _count_memory_ending(spec, h)
        # The count still at oomsBeforeGrow: the limit is at its ceiling and cannot grow.
        consume = consume or h.ooms_without_progress >= spec.memory_policy.ooms_before_grow
    if grown is not None:
        h = h.evolve(
            message=f"{h.message}; memory limit raised to "
            f"{quantity.format_bytes(grown[1])} after "
            f"{spec.memory_policy.ooms_before_grow} restarts without progress"
        )
    return _charge(spec, h, consume, now, generation), cause, grown


def _count_memory_ending(
    spec: EmbeddingImportSpec, h: ShardStatus
) -> tuple[ShardStatus, tuple[int, int] | None]:
    """One more memory-caused ending without progress; at ``oomsBeforeGrow`` of them the limit
    grows and the count restarts; at the ceiling the count stays. Returns the limit grown
    (from, to), if it grew."""
    policy = spec.memory_policy
    ooms = h.ooms_without_progress + 1
    if ooms < policy.ooms_before_grow:
        return h.evolve(ooms_without_progress=ooms), None
    current = _limit_in_force(spec, h)
    target = min(quantity.round_up_mi(current * policy.grow_factor), spec.ceiling_bytes)
    if target > current:
        return h.evolve(memory_limit=quantity.format_bytes(target), ooms_without_progress=0), (
            current,
            target,
        )
    return h.evolve(ooms_without_progress=ooms), None


def _charge(
    spec: EmbeddingImportSpec, h: ShardStatus, consume: bool, now: datetime, generation: int
) -> ShardStatus:
    """Count a restart and, if ``consume``, a failure against the budget (with backoff)."""
    policy = spec.memory_policy
    fails = h.failures_without_progress + (1 if consume else 0)
    h = h.evolve(failures_without_progress=fails, restarts=h.restarts + 1)
    if fails > policy.retry_budget:
        return h.evolve(
            phase=ShardPhase.FAILED,
            failed_generation=generation,
            reason=EndReason.BUDGET_EXHAUSTED,
            message=f"{h.message}; {fails} failures without progress exceed retryBudget "
            f"{policy.retry_budget}; fix the cause and change the spec to retry",
        )
    if not consume:
        return h
    delay = min(policy.backoff_seconds * 2 ** (fails - 1), policy.max_backoff_seconds)
    return h.evolve(
        message=f"{h.message}; failure {fails} of {policy.retry_budget} without progress, "
        f"next attempt in {delay}s",
        not_before=now + timedelta(seconds=delay) if delay > 0 else None,
    )


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


def _last_line(message: str) -> str:
    """The termination message's last line: with FallbackToLogsOnError the message is the log
    tail, and the importer's last line says why it stopped (e.g. what to fix for exit 78)."""
    lines = [ln for ln in message.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


# DisruptionTarget reasons (set before the pod is deleted) -> how the ending is told
DISRUPTIONS: dict[str, str] = {
    "PreemptionByScheduler": "preempted by the scheduler",
    "EvictionByEvictionAPI": "evicted (eviction API: a drain or an autoscaler)",
    "DeletionByTaintManager": "deleted by the taint manager (NoExecute taint)",
    "TerminationByKubelet": "terminated by the kubelet (node pressure or shutdown)",
}


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
        return _Ending(
            EndReason.OOM_KILLED,
            f"{pod.name} was OOM-killed at its memory limit{shown}",
            RestartCause.OOM_KILLED,
        )
    complete = checkpoint is not None and checkpoint.complete
    if code == contract.EXIT_OK and complete and not continuous:
        return _Ending(EndReason.COMPLETED, f"{pod.name} finished the shard")
    if code == contract.EXIT_SUPERSEDED:
        return _Ending(
            EndReason.SUPERSEDED,
            f"{pod.name} exited {code}: a newer attempt of the "
            f"shard holds the fence, so it stopped without writing{detail}",
        )
    if pod.evicted or pod.deleting:  # by someone else (a preemption, a drain): not a failure
        why = t.reason.lower() if t.reason and t.reason not in ("Error", "Completed") else "deleted"
        why = DISRUPTIONS.get(pod.disruption, why)
        return _Ending(EndReason.EVICTED, f"{pod.name} was {why}{detail}", RestartCause.EVICTED)
    return _by_exit_code(pod.name, code, t.reason, detail, continuous=continuous)


def _by_exit_code(
    name: str, code: int | None, reason: str, detail: str, *, continuous: bool
) -> _Ending:
    """How a pod that was neither OOM-killed, nor done, nor superseded, nor evicted ended, by
    its exit code."""
    if code == contract.EXIT_TEMPFAIL:
        return _Ending(
            EndReason.THRESHOLD,
            f"{name} exited 75 (planned roll at the memory threshold or recycle point)",
            RestartCause.THRESHOLD,
        )
    if code == contract.EXIT_CONFIG:
        return _Ending(
            EndReason.CONFIG_ERROR,
            f"{name} exited 78 (bad configuration or unreadable sources){detail}; "
            "fix the spec to retry",
        )
    if code == contract.EXIT_OOM_KILLED:
        return _Ending(
            EndReason.KILLED,
            f"{name} was killed by SIGKILL (exit 137, reason {reason or 'unset'}: not an OOM kill)",
            RestartCause.KILLED,
        )
    if code == contract.EXIT_OK and continuous:
        return _Ending(
            EndReason.EXITED,
            f"{name} exited 0, but in mode Continuous the "
            "importer follows its source for good; starting the next pod",
            RestartCause.EXITED,
        )
    if code == contract.EXIT_OK:
        return _Ending(
            EndReason.CRASH,
            f"{name} exited 0 but its checkpoint is not complete",
            RestartCause.CRASH,
        )
    what = f"exited {code}" if code is not None else f"failed ({reason or 'no exit code'})"
    return _Ending(EndReason.CRASH, f"{name} {what}{detail}", RestartCause.CRASH)


def _stoppable(pods: Sequence[ObservedPod]) -> tuple[str, ...]:
    """Live pods not already being deleted."""
    return tuple(p.name for p in pods if p.is_live and not p.deleting)


def _prune(mine: Sequence[ObservedPod], h: ShardStatus, keep: int) -> tuple[str, ...]:
    """Terminated, accounted-for pods beyond the newest ``keep`` (kept for their logs)."""
    done = [p for p in mine if not p.is_live and not p.deleting and p.attempt <= h.handled_attempt]
    done.sort(key=lambda p: p.attempt, reverse=True)
    return tuple(p.name for p in done[keep:])
