"""The roll decision, table-driven: every cause x progress x budget row asserts the action,
the reason and the counters that result, so changing a rule fails a row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from eio_operator.decision import Action, decide
from eio_operator.models import ProgressMark, RestartCause, ShardPhase, ShardStatus
from eio_operator.observe import ObservedPod
from eio_operator.reasons import EndReason, ShardReason, StartReason, StateReason
from operator_testlib import NAME, NOW, checkpoint, following, make_spec, pod

from eio_common import quantity

GEN = 7
A3 = f"{NAME}-s0-a3"


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


@dataclass(frozen=True)
class Row:
    id: str
    pods: tuple[ObservedPod, ...]
    done: int  # files done in the checkpoint; 5 = no progress since the mark, 7 = progress
    fails: int  # failuresWithoutProgress before
    ooms: int  # oomsWithoutProgress before
    action: Action
    reason: ShardReason
    restart: RestartCause | None
    fails_after: int
    ooms_after: int
    limit_after: str
    phase: ShardPhase
    backoff: int | None = None  # seconds until notBefore, None = not set
    complete: bool = False
    limit_before: str = "1Gi"
    hb_ago: float = 5
    memory_mi: int = 100
    over_since_ago: float | None = None
    create: int | None = None  # attempt of the pod to create
    delete: tuple[str, ...] = ()
    continuous: bool = False  # spec.mode Continuous


NO, YES = 5, 7  # checkpoint files done: no progress / progress (mark is 5)

ROWS = [
    # exit 0 ----------------------------------------------------------------------------
    Row(
        "exit0-complete",
        (pod(3, exit_code=0),),
        YES,
        1,
        1,
        Action.COMPLETE,
        EndReason.COMPLETED,
        None,
        0,
        0,
        "1Gi",
        ShardPhase.SUCCEEDED,
        complete=True,
    ),
    Row(
        "exit0-not-complete",
        (pod(3, exit_code=0),),
        NO,
        0,
        0,
        Action.BACKOFF,
        EndReason.CRASH,
        RestartCause.CRASH,
        1,
        0,
        "1Gi",
        ShardPhase.BACKING_OFF,
        backoff=10,
    ),
    # exit 75: planned roll, no backoff, no budget -------------------------------------
    Row(
        "exit75-progress",
        (pod(3, exit_code=75),),
        YES,
        1,
        1,
        Action.ROLL,
        EndReason.THRESHOLD,
        RestartCause.THRESHOLD,
        0,
        0,
        "1Gi",
        ShardPhase.PENDING,
        create=4,
    ),
    Row(
        "exit75-no-progress",
        (pod(3, exit_code=75),),
        NO,
        1,
        0,
        Action.ROLL,
        EndReason.THRESHOLD,
        RestartCause.THRESHOLD,
        1,
        1,
        "1Gi",
        ShardPhase.PENDING,
        create=4,
    ),
    Row(
        "exit75-no-progress-grows",
        (pod(3, exit_code=75),),
        NO,
        0,
        1,
        Action.ROLL,
        EndReason.THRESHOLD,
        RestartCause.THRESHOLD,
        0,
        0,
        "1536Mi",
        ShardPhase.PENDING,
        create=4,
    ),
    # OOMKilled ------------------------------------------------------------------------
    Row(
        "oom-progress",
        (pod(3, exit_code=137, reason="OOMKilled"),),
        YES,
        2,
        1,
        Action.ROLL,
        EndReason.OOM_KILLED,
        RestartCause.OOM_KILLED,
        0,
        0,
        "1Gi",
        ShardPhase.PENDING,
        create=4,
    ),
    Row(
        "oom-no-progress-first",
        (pod(3, exit_code=137, reason="OOMKilled"),),
        NO,
        0,
        0,
        Action.ROLL,
        EndReason.OOM_KILLED,
        RestartCause.OOM_KILLED,
        0,
        1,
        "1Gi",
        ShardPhase.PENDING,
        create=4,
    ),
    Row(
        "oom-no-progress-grows",
        (pod(3, exit_code=137, reason="OOMKilled"),),
        NO,
        0,
        1,
        Action.ROLL,
        EndReason.OOM_KILLED,
        RestartCause.OOM_KILLED,
        0,
        0,
        "1536Mi",
        ShardPhase.PENDING,
        create=4,
    ),
    Row(
        "oom-no-progress-grows-to-ceiling",
        (pod(3, exit_code=137, reason="OOMKilled"),),
        NO,
        0,
        1,
        Action.ROLL,
        EndReason.OOM_KILLED,
        RestartCause.OOM_KILLED,
        0,
        0,
        "2Gi",
        ShardPhase.PENDING,
        limit_before="1536Mi",
        create=4,
    ),
    Row(
        "oom-no-progress-at-ceiling",
        (pod(3, exit_code=137, reason="OOMKilled"),),
        NO,
        0,
        1,
        Action.BACKOFF,
        EndReason.OOM_KILLED,
        RestartCause.OOM_KILLED,
        1,
        2,
        "2Gi",
        ShardPhase.BACKING_OFF,
        backoff=10,
        limit_before="2Gi",
    ),
    Row(
        "oom-at-ceiling-budget-exhausted",
        (pod(3, exit_code=137, reason="OOMKilled"),),
        NO,
        2,
        2,
        Action.FAIL,
        EndReason.BUDGET_EXHAUSTED,
        RestartCause.OOM_KILLED,
        3,
        3,
        "2Gi",
        ShardPhase.FAILED,
        limit_before="2Gi",
    ),
    # The kubelet's reason wins (issue 12): OOMKilled whatever the exit code (cgroup v1 may kill
    # only a child; the container then exits with its shell's code, even 0) ...
    Row(
        "oom-reason-exit0",
        (pod(3, exit_code=0, reason="OOMKilled"),),
        NO,
        0,
        0,
        Action.ROLL,
        EndReason.OOM_KILLED,
        RestartCause.OOM_KILLED,
        0,
        1,
        "1Gi",
        ShardPhase.PENDING,
        create=4,
    ),
    Row(
        "oom-reason-exit0-checkpoint-complete",
        (pod(3, exit_code=0, reason="OOMKilled"),),
        YES,
        0,
        0,
        Action.ROLL,
        EndReason.OOM_KILLED,
        RestartCause.OOM_KILLED,
        0,
        0,
        "1Gi",
        ShardPhase.PENDING,
        complete=True,
        create=4,
    ),
    Row(
        "oom-reason-exit1",
        (pod(3, exit_code=1, reason="OOMKilled"),),
        NO,
        1,
        0,
        Action.ROLL,
        EndReason.OOM_KILLED,
        RestartCause.OOM_KILLED,
        1,
        1,
        "1Gi",
        ShardPhase.PENDING,
        create=4,
    ),
    Row(
        "oom-reason-exit75",
        (pod(3, exit_code=75, reason="OOMKilled"),),
        YES,
        0,
        0,
        Action.ROLL,
        EndReason.OOM_KILLED,
        RestartCause.OOM_KILLED,
        0,
        0,
        "1Gi",
        ShardPhase.PENDING,
        create=4,
    ),
    # ... and exit 137 with reason Error is a SIGKILL from outside, not an OOM: at once after
    # progress, otherwise against the budget with backoff (no memory growth either way).
    Row(
        "exit137-error-progress",
        (pod(3, exit_code=137, reason="Error"),),
        YES,
        2,
        1,
        Action.ROLL,
        EndReason.KILLED,
        RestartCause.KILLED,
        0,
        0,
        "1Gi",
        ShardPhase.PENDING,
        create=4,
    ),
    Row(
        "exit137-error-no-progress",
        (pod(3, exit_code=137, reason="Error"),),
        NO,
        0,
        1,
        Action.BACKOFF,
        EndReason.KILLED,
        RestartCause.KILLED,
        1,
        1,
        "1Gi",
        ShardPhase.BACKING_OFF,
        backoff=10,
    ),
    Row(
        "exit137-error-budget-exhausted",
        (pod(3, exit_code=137, reason="Error"),),
        NO,
        2,
        0,
        Action.FAIL,
        EndReason.BUDGET_EXHAUSTED,
        RestartCause.KILLED,
        3,
        0,
        "1Gi",
        ShardPhase.FAILED,
    ),
    # crash: backoff, budget --------------------------------------------------------------
    Row(
        "crash-progress-resets-budget",
        (pod(3, exit_code=1),),
        YES,
        2,
        1,
        Action.BACKOFF,
        EndReason.CRASH,
        RestartCause.CRASH,
        1,
        0,
        "1Gi",
        ShardPhase.BACKING_OFF,
        backoff=10,
    ),
    Row(
        "crash-no-progress-doubles-backoff",
        (pod(3, exit_code=1),),
        NO,
        1,
        0,
        Action.BACKOFF,
        EndReason.CRASH,
        RestartCause.CRASH,
        2,
        0,
        "1Gi",
        ShardPhase.BACKING_OFF,
        backoff=20,
    ),
    Row(
        "crash-budget-exhausted",
        (pod(3, exit_code=1),),
        NO,
        2,
        0,
        Action.FAIL,
        EndReason.BUDGET_EXHAUSTED,
        RestartCause.CRASH,
        3,
        0,
        "1Gi",
        ShardPhase.FAILED,
    ),
    Row(
        "crash-budget-exhausted-despite-old-ooms",
        (pod(3, exit_code=2),),
        NO,
        2,
        1,
        Action.FAIL,
        EndReason.BUDGET_EXHAUSTED,
        RestartCause.CRASH,
        3,
        1,
        "1Gi",
        ShardPhase.FAILED,
    ),
    # exit 78: fail, no restart ---------------------------------------------------------
    Row(
        "exit78-config-error",
        (pod(3, exit_code=78),),
        YES,
        0,
        0,
        Action.FAIL,
        EndReason.CONFIG_ERROR,
        None,
        0,
        0,
        "1Gi",
        ShardPhase.FAILED,
    ),
    # evicted / deleted: restart at once, no budget ---------------------------------------
    Row(
        "evicted",
        (pod(3, phase="Failed", reason="Evicted", evicted=True),),
        NO,
        2,
        1,
        Action.ROLL,
        EndReason.EVICTED,
        RestartCause.EVICTED,
        2,
        1,
        "1Gi",
        ShardPhase.PENDING,
        create=4,
    ),
    Row(
        "deleted-by-someone",
        (pod(3, exit_code=143, deleting=True),),
        NO,
        0,
        0,
        Action.ROLL,
        EndReason.EVICTED,
        RestartCause.EVICTED,
        0,
        0,
        "1Gi",
        ShardPhase.PENDING,
        create=4,
    ),
    Row(
        "pod-disappeared",
        (),
        YES,
        1,
        0,
        Action.ROLL,
        EndReason.EVICTED,
        RestartCause.EVICTED,
        0,
        0,
        "1Gi",
        ShardPhase.PENDING,
        create=4,
    ),
    # health check: stalled heartbeat ---------------------------------------------------
    Row(
        "stalled",
        (pod(3, started_ago=1000),),
        NO,
        0,
        0,
        Action.KILL,
        EndReason.STALLED,
        RestartCause.STALLED,
        1,
        0,
        "1Gi",
        ShardPhase.TERMINATING,
        backoff=10,
        hb_ago=400,
        delete=(A3,),
    ),
    Row(
        "stalled-after-progress",
        (pod(3, started_ago=1000),),
        YES,
        2,
        0,
        Action.KILL,
        EndReason.STALLED,
        RestartCause.STALLED,
        1,
        0,
        "1Gi",
        ShardPhase.TERMINATING,
        backoff=10,
        hb_ago=400,
        delete=(A3,),
    ),
    Row(
        "stalled-budget-exhausted",
        (pod(3, started_ago=1000),),
        NO,
        2,
        0,
        Action.FAIL,
        EndReason.BUDGET_EXHAUSTED,
        RestartCause.STALLED,
        3,
        0,
        "1Gi",
        ShardPhase.FAILED,
        hb_ago=400,
        delete=(A3,),
    ),
    # health check: over threshold (85% of 1Gi = 870Mi) --------------------------------------
    Row(
        "over-threshold-first-seen",
        (pod(3),),
        NO,
        0,
        0,
        Action.WAIT,
        StateReason.RUNNING,
        None,
        0,
        0,
        "1Gi",
        ShardPhase.RUNNING,
        memory_mi=950,
    ),
    Row(
        "over-threshold-within-grace",
        (pod(3),),
        NO,
        0,
        0,
        Action.WAIT,
        StateReason.RUNNING,
        None,
        0,
        0,
        "1Gi",
        ShardPhase.RUNNING,
        memory_mi=950,
        over_since_ago=30,
    ),
    Row(
        "over-threshold-past-grace",
        (pod(3),),
        NO,
        0,
        0,
        Action.KILL,
        EndReason.OVER_THRESHOLD,
        RestartCause.OVER_THRESHOLD,
        0,
        1,
        "1Gi",
        ShardPhase.TERMINATING,
        memory_mi=950,
        over_since_ago=61,
        delete=(A3,),
    ),
    Row(
        "over-threshold-past-grace-grows",
        (pod(3),),
        NO,
        0,
        1,
        Action.KILL,
        EndReason.OVER_THRESHOLD,
        RestartCause.OVER_THRESHOLD,
        0,
        0,
        "1536Mi",
        ShardPhase.TERMINATING,
        memory_mi=950,
        over_since_ago=61,
        delete=(A3,),
    ),
    Row(
        "over-threshold-with-progress",
        (pod(3),),
        YES,
        1,
        1,
        Action.KILL,
        EndReason.OVER_THRESHOLD,
        RestartCause.OVER_THRESHOLD,
        0,
        0,
        "1Gi",
        ShardPhase.TERMINATING,
        memory_mi=950,
        over_since_ago=61,
        delete=(A3,),
    ),
    # healthy -----------------------------------------------------------------------------
    Row(
        "running-healthy",
        (pod(3),),
        YES,
        1,
        1,
        Action.WAIT,
        StateReason.RUNNING,
        None,
        1,
        1,
        "1Gi",
        ShardPhase.RUNNING,
    ),
    Row(
        "pending",
        (pod(3, phase="Pending", waiting="ContainerCreating"),),
        NO,
        0,
        0,
        Action.WAIT,
        StateReason.PENDING,
        None,
        0,
        0,
        "1Gi",
        ShardPhase.PENDING,
    ),
    Row(
        "image-pull-error",
        (pod(3, phase="Pending", waiting="ImagePullBackOff"),),
        NO,
        0,
        0,
        Action.WAIT,
        StateReason.POD_NOT_STARTING,
        None,
        0,
        0,
        "1Gi",
        ShardPhase.PENDING,
    ),
    # mode Continuous: an exit 0 never completes the shard (a following importer never exits
    # 0 on its own); the next pod starts at once after progress, with backoff without it -----
    Row(
        "continuous-exit0-progress",
        (pod(3, exit_code=0),),
        YES,
        1,
        1,
        Action.ROLL,
        EndReason.EXITED,
        RestartCause.EXITED,
        0,
        0,
        "1Gi",
        ShardPhase.PENDING,
        create=4,
        continuous=True,
    ),
    Row(
        "continuous-exit0-complete-is-not-the-end",
        (pod(3, exit_code=0),),
        YES,
        0,
        0,
        Action.ROLL,
        EndReason.EXITED,
        RestartCause.EXITED,
        0,
        0,
        "1Gi",
        ShardPhase.PENDING,
        complete=True,
        create=4,
        continuous=True,
    ),
    Row(
        "continuous-exit0-no-progress",
        (pod(3, exit_code=0),),
        NO,
        0,
        0,
        Action.BACKOFF,
        EndReason.EXITED,
        RestartCause.EXITED,
        1,
        0,
        "1Gi",
        ShardPhase.BACKING_OFF,
        backoff=10,
        continuous=True,
    ),
    Row(
        "continuous-exit0-budget-exhausted",
        (pod(3, exit_code=0),),
        NO,
        2,
        0,
        Action.FAIL,
        EndReason.BUDGET_EXHAUSTED,
        RestartCause.EXITED,
        3,
        0,
        "1Gi",
        ShardPhase.FAILED,
        continuous=True,
    ),
    # ... and every other ending rolls exactly as in mode Once
    Row(
        "continuous-exit75",
        (pod(3, exit_code=75),),
        NO,
        0,
        1,
        Action.ROLL,
        EndReason.THRESHOLD,
        RestartCause.THRESHOLD,
        0,
        0,
        "1536Mi",
        ShardPhase.PENDING,
        create=4,
        continuous=True,
    ),
    Row(
        "continuous-oom",
        (pod(3, exit_code=137, reason="OOMKilled"),),
        NO,
        0,
        0,
        Action.ROLL,
        EndReason.OOM_KILLED,
        RestartCause.OOM_KILLED,
        0,
        1,
        "1Gi",
        ShardPhase.PENDING,
        create=4,
        continuous=True,
    ),
    Row(
        "continuous-oom-reason-exit0",
        (pod(3, exit_code=0, reason="OOMKilled"),),
        YES,
        0,
        0,
        Action.ROLL,
        EndReason.OOM_KILLED,
        RestartCause.OOM_KILLED,
        0,
        0,
        "1Gi",
        ShardPhase.PENDING,
        create=4,
        continuous=True,
    ),
    Row(
        "continuous-killed",
        (pod(3, exit_code=137, reason="Error"),),
        NO,
        0,
        0,
        Action.BACKOFF,
        EndReason.KILLED,
        RestartCause.KILLED,
        1,
        0,
        "1Gi",
        ShardPhase.BACKING_OFF,
        backoff=10,
        continuous=True,
    ),
    Row(
        "continuous-crash",
        (pod(3, exit_code=1),),
        YES,
        0,
        0,
        Action.BACKOFF,
        EndReason.CRASH,
        RestartCause.CRASH,
        1,
        0,
        "1Gi",
        ShardPhase.BACKING_OFF,
        backoff=10,
        continuous=True,
    ),
    Row(
        "continuous-config-error",
        (pod(3, exit_code=78),),
        YES,
        0,
        0,
        Action.FAIL,
        EndReason.CONFIG_ERROR,
        None,
        0,
        0,
        "1Gi",
        ShardPhase.FAILED,
        continuous=True,
    ),
    Row(
        "continuous-over-threshold-past-grace",
        (pod(3),),
        NO,
        0,
        0,
        Action.KILL,
        EndReason.OVER_THRESHOLD,
        RestartCause.OVER_THRESHOLD,
        0,
        1,
        "1Gi",
        ShardPhase.TERMINATING,
        memory_mi=950,
        over_since_ago=61,
        delete=(A3,),
        continuous=True,
    ),
    Row(
        "continuous-stalled",
        (pod(3, started_ago=1000),),
        NO,
        0,
        0,
        Action.KILL,
        EndReason.STALLED,
        RestartCause.STALLED,
        1,
        0,
        "1Gi",
        ShardPhase.TERMINATING,
        backoff=10,
        hb_ago=400,
        delete=(A3,),
        continuous=True,
    ),
    Row(
        "continuous-running",
        (pod(3),),
        YES,
        0,
        0,
        Action.WAIT,
        StateReason.RUNNING,
        None,
        0,
        0,
        "1Gi",
        ShardPhase.RUNNING,
        continuous=True,
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_decision_table(row: Row) -> None:
    spec = make_spec(mode="Continuous" if row.continuous else None)
    over_since = None if row.over_since_ago is None else NOW - timedelta(seconds=row.over_since_ago)
    h = history(
        failures_without_progress=row.fails,
        ooms_without_progress=row.ooms,
        memory_limit=row.limit_before,
        over_threshold_since=over_since,
    )
    cp = checkpoint(
        row.done, complete=row.complete, hb_pod=A3, hb_ago=row.hb_ago, memory_mi=row.memory_mi
    )
    d = decide(spec, 0, row.pods, cp, h, NOW, GEN, import_name=NAME)

    assert (d.action, d.reason, d.restart) == (row.action, row.reason, row.restart)
    s = d.shard
    assert (s.failures_without_progress, s.ooms_without_progress) == (
        row.fails_after,
        row.ooms_after,
    )
    assert s.memory_limit == row.limit_after
    assert s.phase == row.phase
    expected_not_before = None if row.backoff is None else NOW + timedelta(seconds=row.backoff)
    assert s.not_before == expected_not_before
    assert d.delete == row.delete
    if row.create is None:
        assert d.create is None
    else:
        assert d.create is not None
        assert d.create.attempt == row.create
        assert s.memory_limit is not None
        assert d.create.memory_limit_bytes == quantity.memory_bytes(s.memory_limit)
        assert s.attempt == row.create
        assert s.pod == f"{NAME}-s0-a{row.create}"
        assert s.pod_uid is None
    # Accounting: a counted restart bumps the shard's restarts and marks the attempt handled.
    if row.restart is not None:
        assert s.restarts == 1
        assert s.handled_attempt == 3
    if row.phase == ShardPhase.FAILED:
        assert s.failed_generation == GEN
    if row.done == YES and row.action not in (Action.WAIT,):
        assert s.progress_mark == ProgressMark(files=7, records=0)
    # Never a new pod while one of the shard's pods is live.
    if d.create is not None:
        assert not any(p.is_live for p in row.pods)


def test_over_threshold_first_seen_records_since() -> None:
    d = decide(
        make_spec(),
        0,
        (pod(3),),
        checkpoint(hb_pod=A3, memory_mi=950),
        history(),
        NOW,
        GEN,
        import_name=NAME,
    )
    assert d.shard.over_threshold_since == NOW
    assert d.requeue_after == 60


def test_threshold_off_disables_over_threshold_health_check() -> None:
    spec = make_spec(**{"memoryPolicy.threshold": "0"})
    h = history(over_threshold_since=NOW - timedelta(seconds=600))
    d = decide(
        spec, 0, (pod(3),), checkpoint(hb_pod=A3, memory_mi=1000), h, NOW, GEN, import_name=NAME
    )
    assert (d.action, d.shard.over_threshold_since) == (Action.WAIT, None)


def test_absolute_threshold() -> None:
    spec = make_spec(
        **{"memoryPolicy.threshold": "500Mi", "memoryPolicy.overThresholdGraceSeconds": 0}
    )
    d = decide(
        spec,
        0,
        (pod(3),),
        checkpoint(hb_pod=A3, memory_mi=501),
        history(),
        NOW,
        GEN,
        import_name=NAME,
    )
    assert (d.action, d.reason) == (Action.KILL, EndReason.OVER_THRESHOLD)


def test_heartbeat_of_previous_pod_is_not_this_pods() -> None:
    # The checkpoint's heartbeat was written by attempt 2: attempt 3 just started, no stall,
    # and the old memory reading does not count against it.
    cp = checkpoint(hb_pod=f"{NAME}-s0-a2", hb_ago=1000, memory_mi=2000, attempt=2)
    d = decide(make_spec(), 0, (pod(3, started_ago=10),), cp, history(), NOW, GEN, import_name=NAME)
    assert (d.action, d.reason) == (Action.WAIT, StateReason.RUNNING)


def test_heartbeat_without_pod_name_matches_by_attempt() -> None:
    cp = checkpoint(hb_pod=None, hb_ago=1000, attempt=3)
    d = decide(
        make_spec(), 0, (pod(3, started_ago=2000),), cp, history(), NOW, GEN, import_name=NAME
    )
    assert d.reason == EndReason.STALLED


def test_stall_off() -> None:
    spec = make_spec(**{"memoryPolicy.stallSeconds": 0})
    d = decide(
        spec,
        0,
        (pod(3, started_ago=100000),),
        checkpoint(hb_pod=A3, hb_ago=99999),
        history(),
        NOW,
        GEN,
        import_name=NAME,
    )
    assert d.action == Action.WAIT


# --- starting, backoff, terminating ------------------------------------------------------------
def test_first_start() -> None:
    d = decide(make_spec(), 0, (), None, ShardStatus(index=0), NOW, GEN, import_name=NAME)
    assert (d.action, d.reason) == (Action.START, StartReason.STARTED)
    assert d.create is not None
    assert (d.create.attempt, d.create.memory_limit_bytes) == (1, 2**30)
    assert d.shard.pod == f"{NAME}-s0-a1"
    assert d.shard.phase == ShardPhase.PENDING
    assert d.shard.checkpoint_ref is not None
    assert d.shard.checkpoint_ref.name == f"{NAME}-ckpt-0"
    assert [e.reason for e in d.events] == ["Started"]


def test_backoff_pending_then_expired() -> None:
    h = history(
        handled_attempt=3,
        phase=ShardPhase.BACKING_OFF,
        reason="Crash",
        not_before=NOW + timedelta(seconds=30),
    )
    done = (pod(3, exit_code=1),)
    d = decide(make_spec(), 0, done, checkpoint(), h, NOW, GEN, import_name=NAME)
    assert (d.action, d.reason, d.create, d.requeue_after) == (
        Action.WAIT,
        StateReason.BACKING_OFF,
        None,
        30,
    )
    later = NOW + timedelta(seconds=31)
    d = decide(make_spec(), 0, done, checkpoint(), h, later, GEN, import_name=NAME)
    assert (d.action, d.reason) == (Action.START, StartReason.BACKOFF_EXPIRED)
    assert d.create is not None
    assert d.create.attempt == 4
    assert d.restart is None  # counted once, when the pod ended


def test_killed_pod_must_be_gone_before_the_next() -> None:
    h = history(handled_attempt=3, phase=ShardPhase.TERMINATING, reason="OverThreshold")
    terminating = (pod(3, deleting=True),)
    d = decide(make_spec(), 0, terminating, checkpoint(), h, NOW, GEN, import_name=NAME)
    waiting = (Action.WAIT, StateReason.TERMINATING, None, ())
    assert (d.action, d.reason, d.create, d.delete) == waiting
    gone = decide(make_spec(), 0, (), checkpoint(), h, NOW, GEN, import_name=NAME)
    assert (gone.action, gone.reason) == (Action.START, StartReason.RESTARTED)
    assert gone.create is not None
    assert gone.create.attempt == 4


def test_handled_live_pod_not_deleting_is_deleted_again() -> None:
    # The operator accounted for attempt 3 and deleted it, but the delete was lost.
    h = history(handled_attempt=3, reason="Stalled")
    d = decide(make_spec(), 0, (pod(3),), checkpoint(), h, NOW, GEN, import_name=NAME)
    assert (d.action, d.delete, d.create) == (Action.WAIT, (A3,), None)


def test_lost_create_is_retried_with_the_same_attempt() -> None:
    h = history(
        attempt=4, handled_attempt=3, pod=f"{NAME}-s0-a4", pod_uid=None, phase=ShardPhase.PENDING
    )
    d = decide(make_spec(), 0, (pod(3, exit_code=75),), checkpoint(), h, NOW, GEN, import_name=NAME)
    assert d.action == Action.START
    assert d.restart is None
    assert d.create is not None
    assert d.create.attempt == 4


def test_duplicate_live_pod_is_deleted() -> None:
    d = decide(
        make_spec(),
        0,
        (pod(2), pod(3)),
        checkpoint(hb_pod=A3),
        history(),
        NOW,
        GEN,
        import_name=NAME,
    )
    assert (d.action, d.delete) == (Action.WAIT, (f"{NAME}-s0-a2",))


def test_newer_pod_than_status_is_adopted() -> None:
    # Status was lost or is stale: the newest observed pod (attempt 5) is the shard's pod.
    d = decide(
        make_spec(),
        0,
        (pod(4, exit_code=75), pod(5)),
        checkpoint(hb_pod=None),
        history(),
        NOW,
        GEN,
        import_name=NAME,
    )
    assert (d.shard.attempt, d.shard.pod, d.shard.pod_uid) == (5, f"{NAME}-s0-a5", "uid-0-5")
    assert d.action == Action.WAIT
    assert d.restart is None


def test_prune_keeps_the_newest_terminated_pods() -> None:
    pods = tuple(pod(a, exit_code=75) for a in range(1, 6))
    h = history(attempt=5, handled_attempt=4, pod=f"{NAME}-s0-a5", pod_uid="uid-0-5")
    d = decide(make_spec(), 0, pods, checkpoint(7), h, NOW, GEN, import_name=NAME)
    assert d.action == Action.ROLL
    assert d.prune == (f"{NAME}-s0-a3", f"{NAME}-s0-a2", f"{NAME}-s0-a1")


def test_keep_zero_prunes_every_handled_pod() -> None:
    spec = make_spec(**{"memoryPolicy.keepTerminatedPods": 0})
    d = decide(
        spec, 0, (pod(3, exit_code=75),), checkpoint(7), history(), NOW, GEN, import_name=NAME
    )
    assert d.prune == (A3,)


# --- suspend, stop, fail, retry ------------------------------------------------------------------
def test_suspend_deletes_the_pod_without_counting_a_restart() -> None:
    spec = make_spec(suspend=True)
    d = decide(spec, 0, (pod(3),), checkpoint(), history(), NOW, GEN, import_name=NAME)
    assert (d.action, d.reason, d.delete, d.restart) == (
        Action.SUSPEND,
        StateReason.SUSPENDED,
        (A3,),
        None,
    )
    assert d.shard.phase == ShardPhase.SUSPENDED
    assert d.shard.handled_attempt == 3
    again = decide(
        spec,
        0,
        (pod(3, exit_code=143, deleting=True),),
        checkpoint(),
        d.shard,
        NOW,
        GEN,
        import_name=NAME,
    )
    assert (again.action, again.delete, again.restart) == (Action.WAIT, (), None)
    resumed = decide(make_spec(), 0, (), checkpoint(), again.shard, NOW, GEN + 1, import_name=NAME)
    assert (resumed.action, resumed.reason) == (Action.START, StartReason.RESUMED)
    assert resumed.create is not None
    assert resumed.create.attempt == 4


def test_suspend_still_accounts_for_a_pod_that_finished() -> None:
    spec = make_spec(suspend=True)
    d = decide(
        spec,
        0,
        (pod(3, exit_code=0),),
        checkpoint(10, complete=True),
        history(),
        NOW,
        GEN,
        import_name=NAME,
    )
    assert (d.action, d.shard.phase) == (Action.COMPLETE, ShardPhase.SUCCEEDED)


def test_other_shard_failed_stops_this_one() -> None:
    d = decide(
        make_spec(),
        0,
        (pod(3),),
        checkpoint(),
        history(),
        NOW,
        GEN,
        import_name=NAME,
        import_failed=True,
    )
    assert (d.action, d.reason, d.delete) == (Action.STOP, StateReason.STOPPED, (A3,))
    assert d.shard.phase == ShardPhase.STOPPED


def test_failed_shard_waits_until_the_spec_changes() -> None:
    h = history(
        handled_attempt=3,
        phase=ShardPhase.FAILED,
        failed_generation=GEN,
        reason="BudgetExhausted",
        failures_without_progress=3,
    )
    d = decide(make_spec(), 0, (pod(3, exit_code=1),), checkpoint(), h, NOW, GEN, import_name=NAME)
    assert (d.action, d.reason, d.create) == (Action.WAIT, StateReason.FAILED, None)
    retry = decide(
        make_spec(), 0, (pod(3, exit_code=1),), checkpoint(), h, NOW, GEN + 1, import_name=NAME
    )
    assert (retry.action, retry.reason) == (Action.START, StartReason.RETRYING)
    assert retry.shard.failures_without_progress == 0
    assert retry.shard.failed_generation is None


def test_succeeded_is_final() -> None:
    h = history(handled_attempt=3, phase=ShardPhase.SUCCEEDED)
    d = decide(
        make_spec(),
        0,
        (pod(3, exit_code=0),),
        checkpoint(10, complete=True),
        h,
        NOW,
        GEN,
        import_name=NAME,
    )
    assert (d.action, d.create, d.delete) == (Action.WAIT, None, ())


# --- memory limit in force ----------------------------------------------------------------
def test_spec_limit_raised_above_grown_limit_wins() -> None:
    spec = make_spec(
        **{"importer.resources.limits.memory": "3Gi", "memoryPolicy.maxMemoryLimit": "4Gi"}
    )
    d = decide(
        spec,
        0,
        (pod(3, exit_code=75),),
        checkpoint(7),
        history(memory_limit="1536Mi"),
        NOW,
        GEN,
        import_name=NAME,
    )
    assert d.create is not None
    assert d.create.memory_limit_bytes == 3 * 2**30


def test_no_ceiling_means_no_growth() -> None:
    spec = make_spec(**{"memoryPolicy.maxMemoryLimit": None})
    d = decide(
        spec,
        0,
        (pod(3, exit_code=137, reason="OOMKilled"),),
        checkpoint(),
        history(ooms_without_progress=1),
        NOW,
        GEN,
        import_name=NAME,
    )
    assert (d.action, d.shard.memory_limit, d.shard.failures_without_progress) == (
        Action.BACKOFF,
        "1Gi",
        1,
    )


def test_growth_posts_an_event() -> None:
    d = decide(
        make_spec(),
        0,
        (pod(3, exit_code=137, reason="OOMKilled"),),
        checkpoint(),
        history(ooms_without_progress=1),
        NOW,
        GEN,
        import_name=NAME,
    )
    assert [(e.type, e.reason) for e in d.events] == [
        ("Warning", "OOMKilled"),
        ("Warning", "MemoryLimitRaised"),
    ]
    assert "1536Mi" in d.events[1].message


def test_backoff_is_capped() -> None:
    spec = make_spec(**{"memoryPolicy.retryBudget": 100, "memoryPolicy.maxBackoffSeconds": 60})
    d = decide(
        spec,
        0,
        (pod(3, exit_code=1),),
        checkpoint(),
        history(failures_without_progress=10),
        NOW,
        GEN,
        import_name=NAME,
    )
    assert d.shard.not_before == NOW + timedelta(seconds=60)


def test_zero_backoff_restarts_at_once() -> None:
    spec = make_spec(**{"memoryPolicy.backoffSeconds": 0})
    d = decide(spec, 0, (pod(3, exit_code=1),), checkpoint(), history(), NOW, GEN, import_name=NAME)
    assert (d.action, d.reason) == (Action.ROLL, EndReason.CRASH)


def test_event_types() -> None:
    planned = decide(
        make_spec(),
        0,
        (pod(3, exit_code=75),),
        checkpoint(7),
        history(),
        NOW,
        GEN,
        import_name=NAME,
    )
    assert [(e.type, e.reason) for e in planned.events] == [("Normal", "Threshold")]
    crash = decide(
        make_spec(), 0, (pod(3, exit_code=1),), checkpoint(), history(), NOW, GEN, import_name=NAME
    )
    assert [(e.type, e.reason) for e in crash.events] == [("Warning", "Crash")]


def test_shards_are_independent() -> None:
    # Pods of shard 1 never influence shard 0's decision.
    d = decide(
        make_spec(),
        0,
        (pod(3), pod(9, shard=1, exit_code=1)),
        checkpoint(hb_pod=A3),
        history(),
        NOW,
        GEN,
        import_name=NAME,
    )
    assert (d.action, d.shard.attempt) == (Action.WAIT, 3)


# --- what the user reads: the cause, not only the reason ----------------------------------------
def test_config_error_message_carries_the_importers_last_log_line() -> None:
    # FallbackToLogsOnError puts the log tail in the termination message; the condition and
    # the Event show its last line, which for exit 78 says what to fix.
    from dataclasses import replace

    from eio_operator.observe import Termination

    tail = (
        "INFO importer: starting\n"
        "embedding-importer: config error: chunk size 512 tokens exceeds the model's input "
        "of 128 tokens minus 2 special tokens: use --chunk-size <= 126\n"
    )
    ended = replace(
        pod(3, exit_code=78), terminated=Termination(exit_code=78, reason="Error", message=tail)
    )
    d = decide(make_spec(), 0, (ended,), checkpoint(5), history(), NOW, GEN, import_name=NAME)
    assert (d.action, d.reason) == (Action.FAIL, EndReason.CONFIG_ERROR)
    assert "use --chunk-size <= 126" in d.shard.message
    assert "starting" not in d.shard.message
    assert any("use --chunk-size <= 126" in e.message for e in d.events)


def test_pod_not_starting_names_the_waiting_message() -> None:
    from dataclasses import replace

    stuck = replace(
        pod(3, phase="Pending", waiting="CreateContainerConfigError"),
        waiting_message='secret "qdrant-key" not found',
    )
    d = decide(make_spec(), 0, (stuck,), checkpoint(5), history(), NOW, GEN, import_name=NAME)
    assert d.reason == StateReason.POD_NOT_STARTING
    assert 'secret "qdrant-key" not found' in d.shard.message


def test_progress_inside_one_long_record_resets_the_counters() -> None:
    # A run that only got through part of a record longer than a chunk (counters.chunks moved,
    # files and records did not) made progress: the OOM counter resets, the limit does not grow.
    cp = checkpoint(5)
    cp.counters.records = 3
    cp.counters.chunks = 40
    h = history(progress_mark=ProgressMark(files=5, records=3, chunks=8), ooms_without_progress=1)
    oom = pod(3, exit_code=137, reason="OOMKilled")
    d = decide(make_spec(), 0, (oom,), cp, h, NOW, GEN, import_name=NAME)
    assert d.shard.progress_mark == ProgressMark(files=5, records=3, chunks=40)
    assert d.shard.ooms_without_progress == 0  # an OOM after progress is not 'without'
    assert d.shard.memory_limit == "1Gi"
    # The same checkpoint again is no progress.
    d2 = decide(
        make_spec(),
        0,
        (oom,),
        cp,
        h.evolve(progress_mark=ProgressMark(files=5, records=3, chunks=40)),
        NOW,
        GEN,
        import_name=NAME,
    )
    # 1 before + this one = oomsBeforeGrow (2): the limit grows (and the counter restarts)
    assert d2.shard.memory_limit == "1536Mi"


# --- mode Continuous ------------------------------------------------------------------------
CONTINUOUS = {"mode": "Continuous"}


def test_continuous_first_start_is_like_once() -> None:
    d = decide(
        make_spec(**CONTINUOUS), 0, (), None, ShardStatus(index=0), NOW, GEN, import_name=NAME
    )
    assert (d.action, d.reason) == (Action.START, StartReason.STARTED)
    assert d.create is not None
    assert d.create.attempt == 1


def test_exited_event_is_a_warning_and_names_the_mode() -> None:
    d = decide(
        make_spec(**CONTINUOUS),
        0,
        (pod(3, exit_code=0),),
        checkpoint(YES),
        history(),
        NOW,
        GEN,
        import_name=NAME,
    )
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "Exited")]
    assert "mode Continuous" in d.shard.message


def test_switch_to_continuous_follows_a_finished_shard() -> None:
    # Finished in mode Once; the user switches the import to Continuous (a new generation).
    h = history(
        handled_attempt=3,
        phase=ShardPhase.SUCCEEDED,
        reason="Completed",
        failures_without_progress=1,
    )
    done = (pod(3, exit_code=0),)
    assert (
        decide(
            make_spec(), 0, done, checkpoint(10, complete=True), h, NOW, GEN, import_name=NAME
        ).action
        == Action.WAIT
    )
    d = decide(
        make_spec(**CONTINUOUS),
        0,
        done,
        checkpoint(10, complete=True),
        h,
        NOW,
        GEN + 1,
        import_name=NAME,
    )
    assert (d.action, d.reason, d.restart) == (Action.START, StartReason.FOLLOWING, None)
    assert d.create is not None
    assert d.create.attempt == 4
    assert d.shard.phase == ShardPhase.PENDING
    assert d.shard.failures_without_progress == 0
    assert [e.reason for e in d.events] == ["Following"]


def test_continuous_suspend_stops_the_follower_and_resume_starts_the_next() -> None:
    spec = make_spec(suspend=True, **CONTINUOUS)
    d = decide(spec, 0, (pod(3),), following(hb_pod=A3), history(), NOW, GEN, import_name=NAME)
    assert (d.action, d.reason, d.delete, d.restart) == (
        Action.SUSPEND,
        StateReason.SUSPENDED,
        (A3,),
        None,
    )
    assert d.shard.phase == ShardPhase.SUSPENDED
    # the follower ends on SIGTERM (exit 75 or 143): not counted, no new pod while suspended
    gone = decide(
        spec, 0, (pod(3, exit_code=75),), following(hb_pod=A3), d.shard, NOW, GEN, import_name=NAME
    )
    assert (gone.action, gone.create, gone.restart) == (Action.WAIT, None, None)
    resumed = decide(
        make_spec(**CONTINUOUS),
        0,
        (pod(3, exit_code=75),),
        following(hb_pod=A3),
        gone.shard,
        NOW,
        GEN + 1,
        import_name=NAME,
    )
    assert (resumed.action, resumed.reason) == (Action.START, StartReason.RESUMED)
    assert resumed.create is not None
    assert resumed.create.attempt == 4


def test_once_exit0_with_complete_checkpoint_still_completes() -> None:
    # Mode Once is unchanged: the same ending completes the shard.
    d = decide(
        make_spec(mode="Once"),
        0,
        (pod(3, exit_code=0),),
        checkpoint(10, complete=True),
        history(),
        NOW,
        GEN,
        import_name=NAME,
    )
    assert (d.action, d.shard.phase) == (Action.COMPLETE, ShardPhase.SUCCEEDED)
