"""Status derivation: conditions, phase, progress text, restart counters."""

from __future__ import annotations

from datetime import timedelta

from eio_operator.decision import decide
from eio_operator.models import (
    EmbeddingImportStatus,
    ImportPhase,
    ShardPhase,
    ShardStatus,
)
from eio_operator.status import invalid_spec_status, progress_text, summarize
from operator_testlib import NAME, NOW, checkpoint, make_spec, pod

from importer.contract import Checkpoint


def _conds(status: EmbeddingImportStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def run(
    spec_patch: dict[str, object],
    shards: list[tuple[tuple, Checkpoint | None, ShardStatus]],
    previous: EmbeddingImportStatus | None = None,
    generation: int = 2,
    now=NOW,
) -> EmbeddingImportStatus:
    spec = make_spec(**spec_patch)
    decisions = [
        decide(spec, i, pods, cp, hist, now, generation, import_name=NAME)
        for i, (pods, cp, hist) in enumerate(shards)
    ]
    return summarize(
        spec=spec,
        generation=generation,
        previous=previous or EmbeddingImportStatus(),
        decisions=decisions,
        checkpoints={i: s[1] for i, s in enumerate(shards)},
        now=now,
    )


def test_fresh_import_is_pending_and_starting() -> None:
    st = run({}, [((), None, ShardStatus(index=0))])
    assert st.phase == ImportPhase.PENDING
    assert _conds(st) == {
        "Succeeded": ("Unknown", "InProgress"),
        "Progressing": ("True", "Starting"),
        "Degraded": ("False", "AsExpected"),
    }
    assert st.progress == "0/?"
    assert st.current_pods == [f"{NAME}-s0-a1"]
    assert [r.name for r in st.checkpoint_refs] == [f"{NAME}-ckpt-0"]
    assert st.observed_generation == 2
    for c in st.conditions:
        assert c.observed_generation == 2


def test_running_with_progress_summed_over_shards() -> None:
    a = ShardStatus(index=0, attempt=1, pod_uid="uid-0-1")
    b = ShardStatus(index=1, attempt=1, pod_uid="uid-1-1")
    st = run(
        {"parallelism.shards": 2},
        [
            ((pod(1),), checkpoint(3, total=10, points=30, attempt=1), a),
            ((pod(1, shard=1),), checkpoint(4, total=5, points=40, shard=1, attempt=1), b),
        ],
    )
    assert st.phase == ImportPhase.RUNNING
    assert st.progress == "7/15 (46%)"
    assert (st.counts.files_done, st.counts.files_total, st.counts.points) == (7, 15, 70)
    assert _conds(st)["Progressing"] == ("True", "Running")


def test_restart_counters_and_last_restart() -> None:
    prev = EmbeddingImportStatus.model_validate({"restarts": {"total": 3, "threshold": 3}})
    hist = ShardStatus(
        index=0,
        attempt=4,
        handled_attempt=3,
        pod=f"{NAME}-s0-a4",
        pod_uid="uid-0-4",
        progress_mark={"files": 5},
    )
    st = run(
        {}, [((pod(4, exit_code=137, reason="OOMKilled"),), checkpoint(), hist)], previous=prev
    )
    assert (st.restarts.total, st.restarts.threshold, st.restarts.oom_killed) == (4, 3, 1)
    assert st.last_restart is not None
    assert (
        st.last_restart.reason,
        st.last_restart.shard,
        st.last_restart.pod,
        st.last_restart.time,
    ) == ("OOMKilled", 0, f"{NAME}-s0-a4", NOW)


def test_succeeded() -> None:
    hist = ShardStatus(index=0, attempt=2, handled_attempt=1, pod_uid="uid-0-2")
    st = run(
        {}, [((pod(2, exit_code=0),), checkpoint(10, total=10, complete=True, points=99), hist)]
    )
    assert st.phase == ImportPhase.SUCCEEDED
    assert _conds(st) == {
        "Succeeded": ("True", "Completed"),
        "Progressing": ("False", "Completed"),
        "Degraded": ("False", "AsExpected"),
    }
    assert st.progress == "10/10 (100%)"
    assert st.current_pods == []


def test_failed_budget_exhausted() -> None:
    hist = ShardStatus(
        index=0,
        attempt=4,
        handled_attempt=3,
        pod_uid="uid-0-4",
        failures_without_progress=2,
        progress_mark={"files": 5},
    )
    st = run({}, [((pod(4, exit_code=1),), checkpoint(), hist)])
    assert st.phase == ImportPhase.FAILED
    assert _conds(st) == {
        "Succeeded": ("False", "BudgetExhausted"),
        "Progressing": ("False", "Failed"),
        "Degraded": ("True", "BudgetExhausted"),
    }
    succeeded = next(c for c in st.conditions if c.type == "Succeeded")
    assert "retryBudget 2" in succeeded.message


def test_config_error_fails_the_import_and_stops_other_shards() -> None:
    # The reconcile decides again with import_failed=True for the other shards; here the
    # status shows the failing shard's reason.
    hist = ShardStatus(index=0, attempt=1, pod_uid="uid-0-1")
    st = run({}, [((pod(1, exit_code=78),), None, hist)])
    assert _conds(st)["Succeeded"] == ("False", "ConfigError")
    assert st.shards[0].phase == ShardPhase.FAILED


def test_retrying_without_progress_is_degraded() -> None:
    hist = ShardStatus(index=0, attempt=1, pod_uid="uid-0-1")
    st = run({}, [((pod(1, exit_code=1),), None, hist)])
    assert st.phase == ImportPhase.RUNNING
    assert _conds(st)["Progressing"] == ("True", "BackingOff")
    assert _conds(st)["Degraded"] == ("True", "RetryingWithoutProgress")


def test_pod_not_starting_is_degraded() -> None:
    hist = ShardStatus(index=0, attempt=1, pod_uid="uid-0-1")
    st = run({}, [((pod(1, phase="Pending", waiting="ErrImagePull"),), None, hist)])
    assert _conds(st)["Degraded"] == ("True", "PodNotStarting")


def test_suspended() -> None:
    hist = ShardStatus(index=0, attempt=1, pod_uid="uid-0-1")
    st = run({"suspend": True}, [((pod(1),), checkpoint(attempt=1), hist)])
    assert st.phase == ImportPhase.SUSPENDED
    assert _conds(st)["Progressing"] == ("False", "Suspended")
    assert _conds(st)["Succeeded"] == ("Unknown", "Suspended")


def test_last_transition_time_is_kept_while_status_is_unchanged() -> None:
    hist = ShardStatus(index=0, attempt=1, pod_uid="uid-0-1")
    first = run({}, [((pod(1),), checkpoint(attempt=1), hist)])
    later = NOW + timedelta(minutes=5)
    second = run(
        {},
        [((pod(1),), checkpoint(attempt=1, hb_ago=-295), first.shards[0])],
        previous=first,
        now=later,
    )
    assert [c.last_transition_time for c in second.conditions] == [NOW, NOW, NOW]
    # An unchanged world gives an identical status: the reconcile then writes nothing.
    assert second.to_wire() == first.to_wire()


def test_invalid_spec_status() -> None:
    st = invalid_spec_status(EmbeddingImportStatus(), "spec.embedding.batchSize: bad", NOW, 5)
    assert st.phase == ImportPhase.INVALID
    assert _conds(st)["Degraded"] == ("True", "InvalidSpec")
    assert _conds(st)["Progressing"] == ("False", "InvalidSpec")
    assert st.observed_generation == 5


def test_progress_text() -> None:
    from eio_operator.models import ProgressCounts

    assert (
        progress_text(ProgressCounts(files_done=420, files_total=1000), True, False)
        == "420/1000 (42%)"
    )
    assert progress_text(ProgressCounts(), True, True) == "0/0 (100%)"
    assert progress_text(ProgressCounts(files_done=3), False, False) == "3/?"


def test_importer_waiting_for_qdrant_shows_in_progressing() -> None:
    # The heartbeat says why no progress is made; the condition names it (phase stays Running).
    a = ShardStatus(index=0, attempt=1, pod_uid="uid-0-1")
    cp = checkpoint(3, total=10, attempt=1, hb_pod=f"{NAME}-s0-a1")
    cp.heartbeat.waiting = "Qdrant at http://q:6333 unreachable for upsert (ConnectError: refused)"
    st = run({}, [((pod(1),), cp, a)])
    assert st.phase == ImportPhase.RUNNING
    assert _conds(st)["Progressing"] == ("True", "Waiting")
    progressing = next(c for c in st.conditions if c.type == "Progressing")
    assert "shard 0" in progressing.message
    assert "Qdrant at http://q:6333 unreachable" in progressing.message
    # Once the heartbeat no longer says so, it is Running again.
    cp.heartbeat.waiting = None
    st = run({}, [((pod(1),), cp, a)], previous=st)
    assert _conds(st)["Progressing"] == ("True", "Running")
