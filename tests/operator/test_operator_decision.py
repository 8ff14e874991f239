"""The roll decision, table-driven: every cause x progress x budget row asserts the action,
the reason and the counters that result, so changing a rule fails a row.

Each group of like cases is one table: ``case(id, given, expect)``, where ``at(...)`` says what
the shard was before (its pods, checkpoint progress, counters) and ``roll``/``backoff``/... say
what the decision must be. Cases that need a decision's single facts share the ``DECISIONS``
table; what takes several decisions in a row stays a test of its own."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from eio_operator.decision import Action, Decision, decide
from eio_operator.models import ProgressMark, RestartCause, ShardPhase, ShardStatus
from eio_operator.observe import ObservedPod, Termination
from eio_operator.reasons import EndReason, ShardReason, StartReason, StateReason
from operator_testlib import NAME, NOW, checkpoint, following, make_spec, pod

from eio_common import quantity
from eio_common.contract import Checkpoint

GEN = 7
A3 = f"{NAME}-s0-a3"
RC = RestartCause
CONTINUOUS = {"mode": "Continuous"}
NO, YES = 5, 7  # checkpoint files done: no progress / progress (the mark is 5)

# The newest pod of shard 0, attempt 3, as the tables see it.
EXIT0 = pod(3, exit_code=0)
EXIT1 = pod(3, exit_code=1)
EXIT2 = pod(3, exit_code=2)
EXIT75 = pod(3, exit_code=75)
EXIT78 = pod(3, exit_code=78)
OOMK = pod(3, exit_code=137, reason="OOMKilled")
SIGKILL = pod(3, exit_code=137, reason="Error")
RUNNING = pod(3)
STALE = pod(3, started_ago=1000)  # with a heartbeat 400 s old: stalled (stallSeconds 300)
# The kubelet's reason OOMKilled with another exit code (cgroup v1 may kill only a child).
OOM_EXIT0 = pod(3, exit_code=0, reason="OOMKilled")
OOM_EXIT1 = pod(3, exit_code=1, reason="OOMKilled")
OOM_EXIT75 = pod(3, exit_code=75, reason="OOMKilled")
EVICTED = pod(3, phase="Failed", reason="Evicted", evicted=True)
EXIT79 = pod(3, exit_code=79)  # superseded: a newer attempt holds the fence
TERMINATING = pod(3, deleting=True)  # Running, deletion requested, never confirmed (silent node)
GONE: tuple[ObservedPod, ...] = ()
DELETED = pod(3, exit_code=143, deleting=True)  # deleted by someone else
# the scheduler's preemption: DisruptionTarget/PreemptionByScheduler, then a delete with the
# pod's grace period; the importer checkpoints on SIGTERM and exits 75 (or is SIGKILLed late)
PREEMPTED = pod(3, phase="Failed", exit_code=75, evicted=True, deleting=True)
PREEMPTED_LATE = pod(3, phase="Failed", exit_code=137, reason="Error", evicted=True, deleting=True)
DELETED_75 = pod(3, phase="Failed", exit_code=75, deleting=True)  # kubectl delete: not a roll
CREATING = pod(3, phase="Pending", waiting="ContainerCreating")
PULL_ERROR = pod(3, phase="Pending", waiting="ImagePullBackOff")


def history(**kw: object) -> ShardStatus:
    base: dict[str, object] = {
        "index": 0,
        "phase": ShardPhase.RUNNING,
        "attempt": 3,
        "handled_attempt": 2,
        "pod": A3,
        "pod_uid": "uid-0-3",
        "memory_limit": "1Gi",
        "progress_mark": ProgressMark(files=5, records=0),
    }
    base.update(kw)
    return ShardStatus.model_validate(base)


def run(
    pods: tuple[ObservedPod, ...],
    cp: Checkpoint | None,
    h: ShardStatus | None = None,
    spec: dict[str, Any] | None = None,
    *,
    now: datetime = NOW,
    gen: int = GEN,
    import_failed: bool = False,
    fence: int | None = None,
) -> Decision:
    """``decide`` for shard 0 of the example import (spec patched with ``spec``)."""
    return decide(
        make_spec(**(spec or {})),
        0,
        pods,
        cp,
        history() if h is None else h,
        now,
        gen,
        import_name=NAME,
        import_failed=import_failed,
        fence=fence,
    )


def facts(d: Decision) -> dict[str, object]:
    """A decision flattened into the facts the tables name."""
    s = d.shard
    return {
        "action": d.action,
        "reason": d.reason,
        "restart": d.restart,
        "create": None if d.create is None else d.create.attempt,
        "create_limit": None if d.create is None else d.create.memory_limit_bytes,
        "delete": d.delete,
        "prune": d.prune,
        "requeue_after": d.requeue_after,
        "events": [(e.type, e.reason) for e in d.events],
        "phase": s.phase,
        "attempt": s.attempt,
        "handled_attempt": s.handled_attempt,
        "pod": s.pod,
        "pod_uid": s.pod_uid,
        "memory_limit": s.memory_limit,
        "fails": s.failures_without_progress,
        "not_before": s.not_before,
        "over_threshold_since": s.over_threshold_since,
        "failed_generation": s.failed_generation,
        "checkpoint_ref": None if s.checkpoint_ref is None else s.checkpoint_ref.name,
    }


def assert_facts(d: Decision, **expected: object) -> None:
    got = facts(d)
    assert {k: got[k] for k in expected} == expected


def case(id: str, *values: object) -> Any:
    """One row of a table: its id, then its values."""
    return pytest.param(*values, id=id)


# --- the roll table: how the newest pod's ending moves the shard -------------------------------
@dataclass(frozen=True)
class Given:
    """Shard 0 before the decision; its checkpoint's heartbeat is the newest pod's."""

    pods: tuple[ObservedPod, ...]
    done: int  # files done in the checkpoint: NO (as the mark) or YES (progress)
    fails: int  # failuresWithoutProgress
    ooms: int  # oomsWithoutProgress
    limit: str = "1Gi"  # the shard's memory limit in force
    complete: bool = False
    hb_ago: float = 5
    memory_mi: int = 100
    over_since_ago: float | None = None


def at(
    pods: ObservedPod | tuple[ObservedPod, ...],
    done: int,
    fails: int,
    ooms: int,
    limit: str = "1Gi",
) -> Given:
    return Given(pods if isinstance(pods, tuple) else (pods,), done, fails, ooms, limit)


@dataclass(frozen=True)
class Expect:
    action: Action
    reason: ShardReason
    restart: RestartCause | None
    phase: ShardPhase
    fails: int = 0  # failuresWithoutProgress after
    ooms: int = 0  # oomsWithoutProgress after
    limit: str = "1Gi"  # memory limit after
    backoff: int | None = None  # seconds until notBefore, None = not set
    create: int | None = None  # attempt of the pod to create
    delete: tuple[str, ...] = ()


def roll(cause: RestartCause, fails: int = 0, ooms: int = 0, limit: str = "1Gi") -> Expect:
    """The next pod at once."""
    reason = EndReason[cause.name]
    return Expect(Action.ROLL, reason, cause, ShardPhase.PENDING, fails, ooms, limit, create=4)


def backoff(
    cause: RestartCause, fails: int, ooms: int = 0, secs: int = 10, limit: str = "1Gi"
) -> Expect:
    reason = EndReason[cause.name]
    return Expect(Action.BACKOFF, reason, cause, ShardPhase.BACKING_OFF, fails, ooms, limit, secs)


def kill(cause: RestartCause, fails: int, ooms: int, limit: str = "1Gi") -> Expect:
    """The health check deletes the running pod; a stall counts with backoff."""
    secs = 10 if cause == RC.STALLED else None
    reason = EndReason[cause.name]
    phase = ShardPhase.TERMINATING
    return Expect(Action.KILL, reason, cause, phase, fails, ooms, limit, secs, delete=(A3,))


def exhausted(
    cause: RestartCause, fails: int, ooms: int = 0, limit: str = "1Gi", delete: tuple[str, ...] = ()
) -> Expect:
    reason = EndReason.BUDGET_EXHAUSTED
    return Expect(Action.FAIL, reason, cause, ShardPhase.FAILED, fails, ooms, limit, delete=delete)


def wait(state: StateReason, fails: int = 0, ooms: int = 0) -> Expect:
    phase = ShardPhase.PENDING if state != StateReason.RUNNING else ShardPhase.RUNNING
    return Expect(Action.WAIT, state, None, phase, fails, ooms)


COMPLETED = Expect(Action.COMPLETE, EndReason.COMPLETED, None, ShardPhase.SUCCEEDED)
COMPLETED_DELETING = replace(COMPLETED, delete=(A3,))  # its live pod is deleted, not awaited
CONFIG_ERROR = Expect(Action.FAIL, EndReason.CONFIG_ERROR, None, ShardPhase.FAILED)


def check(given: Given, expect: Expect, *, continuous: bool = False) -> None:
    """Decide for ``given`` and assert ``expect`` plus what holds for every row."""
    over_since = given.over_since_ago
    h = history(
        failures_without_progress=given.fails,
        ooms_without_progress=given.ooms,
        memory_limit=given.limit,
        over_threshold_since=None if over_since is None else NOW - timedelta(seconds=over_since),
    )
    cp = checkpoint(
        given.done,
        complete=given.complete,
        hb_pod=A3,
        hb_ago=given.hb_ago,
        memory_mi=given.memory_mi,
    )
    d = run(given.pods, cp, h, CONTINUOUS if continuous else None)
    s = d.shard
    assert (d.action, d.reason, d.restart, s.phase) == (
        expect.action,
        expect.reason,
        expect.restart,
        expect.phase,
    )
    assert (s.failures_without_progress, s.ooms_without_progress) == (expect.fails, expect.ooms)
    assert s.memory_limit == expect.limit
    after = None if expect.backoff is None else NOW + timedelta(seconds=expect.backoff)
    assert s.not_before == after
    assert d.delete == expect.delete
    if expect.create is None:
        assert d.create is None
    else:
        assert d.create is not None
        assert d.create.attempt == expect.create
        assert d.create.memory_limit_bytes == quantity.memory_bytes(expect.limit)
        assert (s.attempt, s.pod, s.pod_uid) == (expect.create, f"{NAME}-s0-a{expect.create}", None)
        # Never a new pod while one of the shard's pods is live.
        assert not any(p.is_live for p in given.pods)
    # Accounting: a counted restart bumps the shard's restarts and marks the attempt handled.
    if expect.restart is not None:
        assert (s.restarts, s.handled_attempt) == (1, 3)
    if expect.phase == ShardPhase.FAILED:
        assert s.failed_generation == GEN
    if given.done == YES and expect.action != Action.WAIT:
        assert s.progress_mark == ProgressMark(files=7, records=0)


def complete(given: Given) -> Given:
    """The checkpoint says the shard's files are all done."""
    return replace(given, complete=True)


def stalled(done: int, fails: int, ooms: int) -> Given:
    """The running pod's heartbeat is 400 s old (stallSeconds 300)."""
    return replace(at(STALE, done, fails, ooms), hb_ago=400)


def hot(done: int, fails: int, ooms: int, since_ago: float | None = 61) -> Given:
    """The running pod's heartbeat memory is 950Mi, above the threshold (85% of 1Gi = 870Mi),
    first seen ``since_ago`` seconds ago (overThresholdGraceSeconds 60)."""
    return replace(at(RUNNING, done, fails, ooms), memory_mi=950, over_since_ago=since_ago)


def table(*rows: object) -> pytest.MarkDecorator:
    """One group of the roll table: rows of ``case(id, given, expect)``."""
    return pytest.mark.parametrize(("given", "expect"), rows)


@table(
    case("complete", complete(at(EXIT0, YES, 1, 1)), COMPLETED),
    case("not-complete", at(EXIT0, NO, 0, 0), backoff(RC.CRASH, 1)),
)
def test_exit_0_completes_a_complete_checkpoint_only(given: Given, expect: Expect) -> None:
    """Mode Once: exit 0 completes the shard only when its checkpoint says complete."""
    check(given, expect)


@table(
    # Issue 18: the importer finished (84/84), then its node went silent; the checkpoint said
    # complete, yet the shard was called stalled and waited for a pod stuck Terminating.
    # A healthy running pod exits 0 right after writing complete: it is waited for, never
    # killed on success (its exit 0 then completes the shard, as in the table above).
    case("running-healthy", complete(at(RUNNING, YES, 0, 0)), wait(StateReason.RUNNING)),
    case("no-heartbeat-past-stallSeconds", complete(stalled(YES, 0, 0)), COMPLETED_DELETING),
    case("stuck-terminating", complete(at(TERMINATING, YES, 1, 0)), COMPLETED),
    case("pod-gone", complete(at(GONE, YES, 0, 0)), COMPLETED),
    case("evicted", complete(at(EVICTED, YES, 0, 0)), COMPLETED),
    case("sigkill", complete(at(SIGKILL, YES, 2, 0)), COMPLETED),
    case("crash-exit1", complete(at(EXIT1, YES, 0, 0)), COMPLETED),
    # The kubelet's reason OOMKilled with exit 0: before issue 18 this rolled; the checkpoint
    # says complete only after the store acknowledged every point, so nothing is left to do.
    case("oom-reason-exit0", complete(at(OOM_EXIT0, YES, 0, 0)), COMPLETED),
)
def test_a_complete_checkpoint_completes_the_shard_whatever_became_of_its_pod(
    given: Given, expect: Expect
) -> None:
    """Mode Once: a checkpoint that says complete is a finished shard: never a stall or a
    failure, and the shard does not wait for its pod to end."""
    check(given, expect)


@table(
    # Exit 79: a newer attempt holds the shard's fence; the pod wrote nothing. Not a restart,
    # no budget, no memory count: the next pod at once (only if no newer pod exists).
    case(
        "superseded",
        at(EXIT79, NO, 2, 1),
        Expect(Action.ROLL, EndReason.SUPERSEDED, None, ShardPhase.PENDING, 2, 1, create=4),
    ),
    case(
        "superseded-memory-counts-unchanged",
        at(EXIT79, NO, 0, 1),
        Expect(Action.ROLL, EndReason.SUPERSEDED, None, ShardPhase.PENDING, 0, 1, create=4),
    ),
)
def test_superseded_exit_is_not_a_failure(given: Given, expect: Expect) -> None:
    check(given, expect)


@table(
    case("progress", at(EXIT75, YES, 1, 1), roll(RC.THRESHOLD)),
    case("no-progress", at(EXIT75, NO, 1, 0), roll(RC.THRESHOLD, 1, 1)),
    case("no-progress-grows", at(EXIT75, NO, 0, 1), roll(RC.THRESHOLD, 0, 0, "1536Mi")),
)
def test_exit_75_rolls_at_once_without_budget(given: Given, expect: Expect) -> None:
    """Exit 75 is the importer's planned roll: the next pod at once, no backoff, no budget;
    without progress it counts towards oomsBeforeGrow."""
    check(given, expect)


@table(
    case("progress", at(OOMK, YES, 2, 1), roll(RC.OOM_KILLED)),
    case("no-progress-first", at(OOMK, NO, 0, 0), roll(RC.OOM_KILLED, 0, 1)),
    case("no-progress-grows", at(OOMK, NO, 0, 1), roll(RC.OOM_KILLED, 0, 0, "1536Mi")),
    case("to-ceiling", at(OOMK, NO, 0, 1, "1536Mi"), roll(RC.OOM_KILLED, 0, 0, "2Gi")),
    case("at-ceiling", at(OOMK, NO, 0, 1, "2Gi"), backoff(RC.OOM_KILLED, 1, 2, limit="2Gi")),
    case("exhausted", at(OOMK, NO, 2, 2, "2Gi"), exhausted(RC.OOM_KILLED, 3, 3, "2Gi")),
    # The kubelet's reason wins (issue 12): OOMKilled whatever the exit code.
    case("reason-exit0", at(OOM_EXIT0, NO, 0, 0), roll(RC.OOM_KILLED, 0, 1)),
    case("reason-exit1", at(OOM_EXIT1, NO, 1, 0), roll(RC.OOM_KILLED, 1, 1)),
    case("reason-exit75", at(OOM_EXIT75, YES, 0, 0), roll(RC.OOM_KILLED)),
)
def test_oom_killed_rolls_at_once_and_grows_the_limit(given: Given, expect: Expect) -> None:
    """An OOM kill rolls at once; oomsBeforeGrow of them without progress grow the limit up to
    maxMemoryLimit, and at the ceiling each further one counts against the budget."""
    check(given, expect)


@table(
    # Exit 137 with reason Error is a SIGKILL from outside, not an OOM: at once after
    # progress, otherwise against the budget with backoff (no memory growth either way).
    case("sigkill-progress", at(SIGKILL, YES, 2, 1), roll(RC.KILLED)),
    case("sigkill-no-progress", at(SIGKILL, NO, 0, 1), backoff(RC.KILLED, 1, 1)),
    case("sigkill-exhausted", at(SIGKILL, NO, 2, 0), exhausted(RC.KILLED, 3)),
    case("crash-progress-resets-budget", at(EXIT1, YES, 2, 1), backoff(RC.CRASH, 1)),
    case("crash-no-progress-doubles-backoff", at(EXIT1, NO, 1, 0), backoff(RC.CRASH, 2, 0, 20)),
    case("crash-exhausted", at(EXIT1, NO, 2, 0), exhausted(RC.CRASH, 3)),
    case("crash-exhausted-old-ooms", at(EXIT2, NO, 2, 1), exhausted(RC.CRASH, 3, 1)),
    case("exit78-config-error", at(EXIT78, YES, 0, 0), CONFIG_ERROR),
)
def test_other_exits_count_against_the_budget(given: Given, expect: Expect) -> None:
    """Crashes (and kills from outside without progress) back off, doubling, and fail the shard
    past retryBudget; exit 78 fails it at once."""
    check(given, expect)


@table(
    case("evicted", at(EVICTED, NO, 2, 1), roll(RC.EVICTED, 2, 1)),
    case("deleted-by-someone", at(DELETED, NO, 0, 0), roll(RC.EVICTED)),
    case("preempted-exit75", at(PREEMPTED, NO, 0, 0), roll(RC.EVICTED)),
    case("preempted-sigkill-after-grace", at(PREEMPTED_LATE, NO, 0, 0), roll(RC.EVICTED)),
    case("deleted-by-someone-exit75", at(DELETED_75, NO, 0, 0), roll(RC.EVICTED)),
    case("pod-disappeared", at((), YES, 1, 0), roll(RC.EVICTED)),
)
def test_evicted_or_deleted_restarts_at_once_without_budget(given: Given, expect: Expect) -> None:
    """An evicted, preempted or deleted pod, or one that is gone, is replaced at once."""
    check(given, expect)


@table(
    case("stalled", stalled(NO, 0, 0), kill(RC.STALLED, 1, 0)),
    # A pod that cannot report (a silent node) after its checkpoint moved since the last
    # attempt's mark is no failure without progress: no budget, no backoff (issue 18).
    case(
        "stalled-after-progress", stalled(YES, 2, 0), replace(kill(RC.STALLED, 0, 0), backoff=None)
    ),
    case("stalled-exhausted", stalled(NO, 2, 0), exhausted(RC.STALLED, 3, delete=(A3,))),
    case("over-threshold-first-seen", hot(NO, 0, 0, None), wait(StateReason.RUNNING)),
    case("over-threshold-within-grace", hot(NO, 0, 0, 30), wait(StateReason.RUNNING)),
    case("over-threshold-past-grace", hot(NO, 0, 0), kill(RC.OVER_THRESHOLD, 0, 1)),
    case("over-threshold-grows", hot(NO, 0, 1), kill(RC.OVER_THRESHOLD, 0, 0, "1536Mi")),
    case("over-threshold-with-progress", hot(YES, 1, 1), kill(RC.OVER_THRESHOLD, 0, 0)),
    case("running-healthy", at(RUNNING, YES, 1, 1), wait(StateReason.RUNNING, 1, 1)),
    case("pending", at(CREATING, NO, 0, 0), wait(StateReason.PENDING)),
    case("image-pull-error", at(PULL_ERROR, NO, 0, 0), wait(StateReason.POD_NOT_STARTING)),
)
def test_health_check_of_a_live_pod(given: Given, expect: Expect) -> None:
    """The operator's health check of a running pod: a stalled heartbeat, memory over the
    threshold past the grace, or nothing to do."""
    check(given, expect)


@table(
    # An exit 0 never completes the shard (a following importer never exits 0 on its own);
    # the next pod starts at once after progress, with backoff without it ...
    case("exit0-progress", at(EXIT0, YES, 1, 1), roll(RC.EXITED)),
    case("exit0-complete-is-not-the-end", complete(at(EXIT0, YES, 0, 0)), roll(RC.EXITED)),
    case("exit0-no-progress", at(EXIT0, NO, 0, 0), backoff(RC.EXITED, 1)),
    case("exit0-exhausted", at(EXIT0, NO, 2, 0), exhausted(RC.EXITED, 3)),
    # ... and every other ending rolls exactly as in mode Once.
    case("exit75", at(EXIT75, NO, 0, 1), roll(RC.THRESHOLD, 0, 0, "1536Mi")),
    case("oom", at(OOMK, NO, 0, 0), roll(RC.OOM_KILLED, 0, 1)),
    case("oom-reason-exit0", at(OOM_EXIT0, YES, 0, 0), roll(RC.OOM_KILLED)),
    case("killed", at(SIGKILL, NO, 0, 0), backoff(RC.KILLED, 1)),
    case("crash", at(EXIT1, YES, 0, 0), backoff(RC.CRASH, 1)),
    case("config-error", at(EXIT78, YES, 0, 0), CONFIG_ERROR),
    case("over-threshold-past-grace", hot(NO, 0, 0), kill(RC.OVER_THRESHOLD, 0, 1)),
    case("stalled", stalled(NO, 0, 0), kill(RC.STALLED, 1, 0)),
    case("running", at(RUNNING, YES, 0, 0), wait(StateReason.RUNNING)),
)
def test_mode_continuous(given: Given, expect: Expect) -> None:
    """Mode Continuous: no ending completes the shard."""
    check(given, expect, continuous=True)


# --- single decisions: the facts each case names ----------------------------------------------
@dataclass(frozen=True)
class Scene:
    """What ``run`` is given: shard 0's pods, its checkpoint and history, a spec patch."""

    pods: tuple[ObservedPod, ...]
    cp: Checkpoint | None = field(default_factory=checkpoint)
    h: ShardStatus = field(default_factory=history)
    spec: dict[str, Any] = field(default_factory=dict)
    import_failed: bool = False
    fence: int | None = None


FRESH = ShardStatus(index=0)

DECISIONS = [
    # --- the health check's settings
    case(
        "over-threshold-first-seen-records-since",
        Scene((RUNNING,), checkpoint(hb_pod=A3, memory_mi=950)),
        {"over_threshold_since": NOW, "requeue_after": 60},
    ),
    case(
        "threshold-off-disables-over-threshold-health-check",
        Scene(
            (RUNNING,),
            checkpoint(hb_pod=A3, memory_mi=1000),
            history(over_threshold_since=NOW - timedelta(seconds=600)),
            {"memoryPolicy.threshold": "0"},
        ),
        {"action": Action.WAIT, "over_threshold_since": None},
    ),
    case(
        "absolute-threshold",
        Scene(
            (RUNNING,),
            checkpoint(hb_pod=A3, memory_mi=501),
            spec={"memoryPolicy.threshold": "500Mi", "memoryPolicy.overThresholdGraceSeconds": 0},
        ),
        {"action": Action.KILL, "reason": EndReason.OVER_THRESHOLD},
    ),
    # The checkpoint's heartbeat was written by attempt 2: attempt 3 just started, no stall,
    # and the old memory reading does not count against it.
    case(
        "heartbeat-of-previous-pod-is-not-this-pods",
        Scene(
            (pod(3, started_ago=10),),
            checkpoint(hb_pod=f"{NAME}-s0-a2", hb_ago=1000, memory_mi=2000, attempt=2),
        ),
        {"action": Action.WAIT, "reason": StateReason.RUNNING},
    ),
    case(
        "heartbeat-without-pod-name-matches-by-attempt",
        Scene((pod(3, started_ago=2000),), checkpoint(hb_pod=None, hb_ago=1000, attempt=3)),
        {"reason": EndReason.STALLED},
    ),
    case(
        "stall-off",
        Scene(
            (pod(3, started_ago=100000),),
            checkpoint(hb_pod=A3, hb_ago=99999),
            spec={"memoryPolicy.stallSeconds": 0},
        ),
        {"action": Action.WAIT},
    ),
    # --- starting, and pods the status does not expect
    case(
        "first-start",
        Scene((), None, FRESH),
        {
            "action": Action.START,
            "reason": StartReason.STARTED,
            "create": 1,
            "create_limit": 2**30,
            "pod": f"{NAME}-s0-a1",
            "phase": ShardPhase.PENDING,
            "checkpoint_ref": f"{NAME}-ckpt-0",
            "events": [("Normal", "Started")],
        },
    ),
    case(
        "continuous-first-start-is-like-once",
        Scene((), None, FRESH, CONTINUOUS),
        {"action": Action.START, "reason": StartReason.STARTED, "create": 1},
    ),
    # The operator accounted for attempt 3 and deleted it, but the delete was lost.
    case(
        "handled-live-pod-not-deleting-is-deleted-again",
        Scene((RUNNING,), h=history(handled_attempt=3, reason="Stalled")),
        {"action": Action.WAIT, "delete": (A3,), "create": None},
    ),
    case(
        "lost-create-is-retried-with-the-same-attempt",
        Scene(
            (EXIT75,),
            h=history(
                attempt=4,
                handled_attempt=3,
                pod=f"{NAME}-s0-a4",
                pod_uid=None,
                phase=ShardPhase.PENDING,
            ),
        ),
        {"action": Action.START, "restart": None, "create": 4},
    ),
    case(
        "duplicate-live-pod-is-deleted",
        Scene((pod(2), RUNNING), checkpoint(hb_pod=A3)),
        {"action": Action.WAIT, "delete": (f"{NAME}-s0-a2",)},
    ),
    # Status was lost or is stale: the newest observed pod (attempt 5) is the shard's pod.
    case(
        "newer-pod-than-status-is-adopted",
        Scene((pod(4, exit_code=75), pod(5)), checkpoint(hb_pod=None)),
        {
            "attempt": 5,
            "pod": f"{NAME}-s0-a5",
            "pod_uid": "uid-0-5",
            "action": Action.WAIT,
            "restart": None,
        },
    ),
    # Pods of shard 1 never influence shard 0's decision.
    case(
        "shards-are-independent",
        Scene((RUNNING, pod(9, shard=1, exit_code=1)), checkpoint(hb_pod=A3)),
        {"action": Action.WAIT, "attempt": 3},
    ),
    # --- pruning ended pods
    case(
        "prune-keeps-the-newest-terminated-pods",
        Scene(
            tuple(pod(a, exit_code=75) for a in range(1, 6)),
            checkpoint(7),
            history(attempt=5, handled_attempt=4, pod=f"{NAME}-s0-a5", pod_uid="uid-0-5"),
        ),
        {"action": Action.ROLL, "prune": (f"{NAME}-s0-a3", f"{NAME}-s0-a2", f"{NAME}-s0-a1")},
    ),
    case(
        "keep-zero-prunes-every-handled-pod",
        Scene((EXIT75,), checkpoint(7), spec={"memoryPolicy.keepTerminatedPods": 0}),
        {"prune": (A3,)},
    ),
    # --- final states and stops
    case(
        "suspend-still-accounts-for-a-pod-that-finished",
        Scene((EXIT0,), checkpoint(10, complete=True), spec={"suspend": True}),
        {"action": Action.COMPLETE, "phase": ShardPhase.SUCCEEDED},
    ),
    # Mode Once is unchanged: the same ending completes the shard.
    case(
        "once-exit0-with-complete-checkpoint-still-completes",
        Scene((EXIT0,), checkpoint(10, complete=True), spec={"mode": "Once"}),
        {"action": Action.COMPLETE, "phase": ShardPhase.SUCCEEDED},
    ),
    case(
        "other-shard-failed-stops-this-one",
        Scene((RUNNING,), import_failed=True),
        {
            "action": Action.STOP,
            "reason": StateReason.STOPPED,
            "delete": (A3,),
            "phase": ShardPhase.STOPPED,
        },
    ),
    case(
        "succeeded-is-final",
        Scene(
            (EXIT0,),
            checkpoint(10, complete=True),
            history(handled_attempt=3, phase=ShardPhase.SUCCEEDED),
        ),
        {"action": Action.WAIT, "create": None, "delete": ()},
    ),
    # --- memory limit in force, backoff
    case(
        "spec-limit-raised-above-grown-limit-wins",
        Scene(
            (EXIT75,),
            checkpoint(7),
            history(memory_limit="1536Mi"),
            {"importer.resources.limits.memory": "3Gi", "memoryPolicy.maxMemoryLimit": "4Gi"},
        ),
        {"create_limit": 3 * 2**30},
    ),
    case(
        "no-ceiling-means-no-growth",
        Scene(
            (OOMK,),
            h=history(ooms_without_progress=1),
            spec={"memoryPolicy.maxMemoryLimit": None},
        ),
        {"action": Action.BACKOFF, "memory_limit": "1Gi", "fails": 1},
    ),
    case(
        "backoff-is-capped",
        Scene(
            (EXIT1,),
            h=history(failures_without_progress=10),
            spec={"memoryPolicy.retryBudget": 100, "memoryPolicy.maxBackoffSeconds": 60},
        ),
        {"not_before": NOW + timedelta(seconds=60)},
    ),
    case(
        "zero-backoff-restarts-at-once",
        Scene((EXIT1,), spec={"memoryPolicy.backoffSeconds": 0}),
        {"action": Action.ROLL, "reason": EndReason.CRASH},
    ),
    # --- event types
    case(
        "planned-roll-event-is-normal",
        Scene((EXIT75,), checkpoint(7)),
        {"events": [("Normal", "Threshold")]},
    ),
    case("crash-event-is-a-warning", Scene((EXIT1,)), {"events": [("Warning", "Crash")]}),
    case(
        "growth-posts-an-event",
        Scene((OOMK,), h=history(ooms_without_progress=1)),
        {"events": [("Warning", "OOMKilled"), ("Warning", "MemoryLimitRaised")]},
    ),
    # --- fencing (issue 18): exit 79 and the fence
    case(
        "superseded-is-a-normal-event-and-no-restart",
        Scene((EXIT79,), checkpoint(YES)),
        {
            "action": Action.ROLL,
            "restart": None,
            "events": [("Normal", "Superseded")],
            "create": 4,
            "handled_attempt": 3,
        },
    ),
    case(
        "older-attempt-superseded-while-the-newer-runs-counts-nothing",
        Scene((pod(2, exit_code=79), RUNNING), checkpoint(hb_pod=A3)),
        {"action": Action.WAIT, "reason": StateReason.RUNNING, "restart": None, "events": []},
    ),
    case(
        "next-attempt-is-never-below-the-fence",
        Scene((EXIT75,), checkpoint(YES), fence=6),
        {"action": Action.ROLL, "create": 6, "pod": f"{NAME}-s0-a6"},
    ),
    case(
        "fence-at-or-below-the-next-attempt-changes-nothing",
        Scene((EXIT75,), checkpoint(YES), fence=3),
        {"action": Action.ROLL, "create": 4},
    ),
    # --- a complete checkpoint after the health check already counted a stall (issue 18)
    case(
        "complete-after-a-counted-stall-completes-without-waiting",
        Scene(
            (TERMINATING,),
            checkpoint(10, complete=True, hb_pod=A3, hb_ago=400),
            history(
                handled_attempt=3,
                phase=ShardPhase.TERMINATING,
                reason="Stalled",
                failures_without_progress=1,
            ),
        ),
        {
            "action": Action.COMPLETE,
            "phase": ShardPhase.SUCCEEDED,
            "delete": (),
            "events": [("Normal", "Completed")],
        },
    ),
    case(
        "complete-of-an-older-attempt-does-not-complete-a-newer-one",
        Scene(
            (pod(4),),
            checkpoint(10, complete=True, attempt=3),
            history(attempt=4, handled_attempt=3, pod=f"{NAME}-s0-a4", pod_uid="uid-0-4"),
        ),
        {"action": Action.WAIT, "reason": StateReason.RUNNING},
    ),
    case(
        "complete-of-a-follower-does-not-complete-mode-once",
        Scene((RUNNING,), checkpoint(10, complete=True, follow=True, hb_pod=A3)),
        {"action": Action.WAIT, "reason": StateReason.RUNNING},
    ),
    case(
        "exited-event-is-a-warning",
        Scene((EXIT0,), checkpoint(YES), spec=CONTINUOUS),
        {"events": [("Warning", "Exited")]},
    ),
]


@pytest.mark.parametrize(("scene", "expected"), DECISIONS)
def test_decision(scene: Scene, expected: dict[str, object]) -> None:
    d = run(
        scene.pods,
        scene.cp,
        scene.h,
        scene.spec,
        import_failed=scene.import_failed,
        fence=scene.fence,
    )
    assert_facts(d, **expected)


# --- what the user reads: the cause, not only the reason ----------------------------------------
def test_config_error_message_carries_the_importers_last_log_line() -> None:
    # FallbackToLogsOnError puts the log tail in the termination message; the condition and
    # the Event show its last line, which for exit 78 says what to fix.
    tail = (
        "INFO importer: starting\n"
        "embedding-importer: config error: chunk size 512 tokens exceeds the model's input "
        "of 128 tokens minus 2 special tokens: use --chunk-size <= 126\n"
    )
    ended = replace(EXIT78, terminated=Termination(exit_code=78, reason="Error", message=tail))
    d = run((ended,), checkpoint(5))
    assert (d.action, d.reason) == (Action.FAIL, EndReason.CONFIG_ERROR)
    assert "use --chunk-size <= 126" in d.shard.message
    assert "starting" not in d.shard.message
    assert any("use --chunk-size <= 126" in e.message for e in d.events)


def test_pod_not_starting_names_the_waiting_message() -> None:
    stuck = replace(
        pod(3, phase="Pending", waiting="CreateContainerConfigError"),
        waiting_message='secret "qdrant-key" not found',
    )
    d = run((stuck,), checkpoint(5))
    assert d.reason == StateReason.POD_NOT_STARTING
    assert 'secret "qdrant-key" not found' in d.shard.message


def test_growth_event_names_the_new_limit() -> None:
    d = run((OOMK,), checkpoint(), history(ooms_without_progress=1))
    assert [e.reason for e in d.events] == ["OOMKilled", "MemoryLimitRaised"]
    assert "1536Mi" in d.events[1].message


def test_exited_message_names_the_mode() -> None:
    d = run((EXIT0,), checkpoint(YES), spec=CONTINUOUS)
    assert "mode Continuous" in d.shard.message


# --- several decisions in a row -----------------------------------------------------------------
def test_backoff_pending_then_expired() -> None:
    h = history(
        handled_attempt=3,
        phase=ShardPhase.BACKING_OFF,
        reason="Crash",
        not_before=NOW + timedelta(seconds=30),
    )
    d = run((EXIT1,), checkpoint(), h)
    assert_facts(
        d, action=Action.WAIT, reason=StateReason.BACKING_OFF, create=None, requeue_after=30
    )
    later = run((EXIT1,), checkpoint(), h, now=NOW + timedelta(seconds=31))
    # the restart was counted once, when the pod ended
    assert_facts(
        later, action=Action.START, reason=StartReason.BACKOFF_EXPIRED, create=4, restart=None
    )


def test_killed_pod_must_be_gone_before_the_next() -> None:
    h = history(handled_attempt=3, phase=ShardPhase.TERMINATING, reason="OverThreshold")
    d = run((pod(3, deleting=True),), checkpoint(), h)
    assert_facts(d, action=Action.WAIT, reason=StateReason.TERMINATING, create=None, delete=())
    gone = run((), checkpoint(), h)
    assert_facts(gone, action=Action.START, reason=StartReason.RESTARTED, create=4)


# Suspend deletes the running pod and counts no restart.
SUSPENDED: dict[str, object] = {
    "action": Action.SUSPEND,
    "reason": StateReason.SUSPENDED,
    "delete": (A3,),
    "restart": None,
    "phase": ShardPhase.SUSPENDED,
}


def test_suspend_deletes_the_pod_without_counting_a_restart() -> None:
    suspend = {"suspend": True}
    d = run((RUNNING,), checkpoint(), spec=suspend)
    assert_facts(d, **SUSPENDED, handled_attempt=3)
    again = run((DELETED,), checkpoint(), d.shard, suspend)
    assert_facts(again, action=Action.WAIT, delete=(), restart=None)
    resumed = run((), checkpoint(), again.shard, gen=GEN + 1)
    assert_facts(resumed, action=Action.START, reason=StartReason.RESUMED, create=4)


def test_failed_shard_waits_until_the_spec_changes() -> None:
    h = history(
        handled_attempt=3,
        phase=ShardPhase.FAILED,
        failed_generation=GEN,
        reason="BudgetExhausted",
        failures_without_progress=3,
    )
    d = run((EXIT1,), checkpoint(), h)
    assert_facts(d, action=Action.WAIT, reason=StateReason.FAILED, create=None)
    retry = run((EXIT1,), checkpoint(), h, gen=GEN + 1)
    assert_facts(
        retry, action=Action.START, reason=StartReason.RETRYING, fails=0, failed_generation=None
    )


def test_progress_inside_one_long_record_resets_the_counters() -> None:
    # A run that only got through part of a record longer than a chunk (counters.chunks moved,
    # files and records did not) made progress: the OOM counter resets, the limit does not grow.
    cp = checkpoint(5)
    cp.counters.records = 3
    cp.counters.chunks = 40
    h = history(progress_mark=ProgressMark(files=5, records=3, chunks=8), ooms_without_progress=1)
    d = run((OOMK,), cp, h)
    assert d.shard.progress_mark == ProgressMark(files=5, records=3, chunks=40)
    assert d.shard.ooms_without_progress == 0  # an OOM after progress is not 'without'
    assert d.shard.memory_limit == "1Gi"
    # The same checkpoint again is no progress.
    d2 = run((OOMK,), cp, h.evolve(progress_mark=ProgressMark(files=5, records=3, chunks=40)))
    # 1 before + this one = oomsBeforeGrow (2): the limit grows (and the counter restarts)
    assert d2.shard.memory_limit == "1536Mi"


def test_switch_to_continuous_follows_a_finished_shard() -> None:
    # Finished in mode Once; the user switches the import to Continuous (a new generation).
    h = history(
        handled_attempt=3,
        phase=ShardPhase.SUCCEEDED,
        reason="Completed",
        failures_without_progress=1,
    )
    finished = checkpoint(10, complete=True)
    assert run((EXIT0,), finished, h).action == Action.WAIT
    d = run((EXIT0,), finished, h, CONTINUOUS, gen=GEN + 1)
    assert_facts(
        d,
        action=Action.START,
        reason=StartReason.FOLLOWING,
        restart=None,
        create=4,
        phase=ShardPhase.PENDING,
        fails=0,
        events=[("Normal", "Following")],
    )


def test_continuous_suspend_stops_the_follower_and_resume_starts_the_next() -> None:
    suspended = {"suspend": True, **CONTINUOUS}
    cp = following(hb_pod=A3)
    d = run((RUNNING,), cp, spec=suspended)
    assert_facts(d, **SUSPENDED)
    # the follower ends on SIGTERM (exit 75 or 143): not counted, no new pod while suspended
    gone = run((EXIT75,), cp, d.shard, suspended)
    assert_facts(gone, action=Action.WAIT, create=None, restart=None)
    resumed = run((EXIT75,), cp, gone.shard, CONTINUOUS, gen=GEN + 1)
    assert_facts(resumed, action=Action.START, reason=StartReason.RESUMED, create=4)


def test_waiting_for_a_pod_stuck_terminating_says_which_pod_on_which_node_since_when() -> None:
    """Issue 18: while the next pod waits for one that does not end, the shard says so."""
    since = NOW - timedelta(seconds=240)
    stuck = replace(pod(3, deleting=True), node="node-b", deleting_since=since)
    h = history(handled_attempt=3, phase=ShardPhase.TERMINATING, reason="Stalled")
    d = run((stuck,), checkpoint(hb_pod=A3, hb_ago=400), h)
    assert (d.action, d.shard.phase, d.create) == (Action.WAIT, ShardPhase.TERMINATING, None)
    assert (
        d.message
        == d.shard.message
        == (
            f"waiting for pod {A3} on node node-b to end (Terminating since "
            f"{since.isoformat().replace('+00:00', 'Z')}) before the next attempt"
        )
    )


def test_a_preemption_is_told_as_such_and_counted_as_an_eviction() -> None:
    preempted = replace(PREEMPTED, disruption="PreemptionByScheduler")
    d = run((preempted,), checkpoint(5))
    assert (d.reason, d.restart) == (EndReason.EVICTED, RestartCause.EVICTED)
    assert f"{A3} was preempted by the scheduler" in d.shard.message
    assert any("preempted by the scheduler" in e.message for e in d.events)
    d = run((DELETED_75,), checkpoint(5))  # no condition: someone deleted it
    assert (d.reason, d.restart) == (EndReason.EVICTED, RestartCause.EVICTED)
    assert f"{A3} was deleted" in d.shard.message
