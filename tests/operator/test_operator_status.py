"""Status derivation: conditions, phase, progress text, restart counters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from eio_operator.decision import decide
from eio_operator.models import (
    Condition,
    EmbeddingImportStatus,
    ImportPhase,
    ShardPhase,
    ShardStatus,
)
from eio_operator.status import invalid_spec_status, progress_text, summarize
from operator_testlib import NAME, NOW, checkpoint, following, make_spec, pod

from eio_common.contract import Checkpoint, Lag, VerifyResult


def _conds(status: EmbeddingImportStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def run(
    spec_patch: dict[str, Any],
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


# --- mode Continuous: Synced, lag, last sync --------------------------------------------------
CONTINUOUS = {"mode": "Continuous"}
A1 = f"{NAME}-s0-a1"


def _running_shard(index: int = 0) -> ShardStatus:
    return ShardStatus(index=index, attempt=1, pod_uid=f"uid-{index}-1")


def _cond(st: EmbeddingImportStatus, type_: str) -> Condition:
    c = st.condition(type_)
    assert c is not None, type_
    return c


@dataclass(frozen=True)
class SyncRow:
    id: str
    checkpoint: Checkpoint | None
    synced: tuple[str, str]
    phase: ImportPhase
    message: str = ""  # expected in the Synced condition's message


SYNC_ROWS = [
    SyncRow(
        "caught-up",
        following(attempt=1, hb_pod=A1),
        ("True", "CaughtUp"),
        ImportPhase.SYNCED,
        "all 1 shard(s) imported every change",
    ),
    SyncRow(
        "no-checkpoint-yet",
        None,
        ("False", "CatchingUp"),
        ImportPhase.CATCHING_UP,
        "shard 0: no checkpoint yet",
    ),
    SyncRow(
        "not-following-yet",
        checkpoint(attempt=1, synced=True),
        ("False", "CatchingUp"),
        ImportPhase.CATCHING_UP,
        "does not follow the source yet",
    ),
    SyncRow(
        "catching-up-with-lag",
        checkpoint(attempt=1, follow=True, lag_files=3, lag_bytes=4096, oldest_ago=40),
        ("False", "CatchingUp"),
        ImportPhase.CATCHING_UP,
        "3 file(s), 4096 bytes pending, oldest change at 2026-11-21T09:59:20Z",
    ),
    SyncRow(
        "heartbeat-stale",
        following(attempt=1, hb_ago=121),
        ("False", "CatchingUp"),
        ImportPhase.CATCHING_UP,
        "no heartbeat since 2026-11-21T09:57:59Z",
    ),
    SyncRow(
        "heartbeat-old-but-fresh",
        following(attempt=1, hb_ago=119),
        ("True", "CaughtUp"),
        ImportPhase.SYNCED,
    ),
]


@pytest.mark.parametrize("row", SYNC_ROWS, ids=[r.id for r in SYNC_ROWS])
def test_synced_condition_table(row: SyncRow) -> None:
    st = run(CONTINUOUS, [((pod(1),), row.checkpoint, _running_shard())])
    assert _conds(st)["Synced"] == row.synced
    assert st.phase == row.phase
    assert row.message in _cond(st, "Synced").message
    # a continuous import is never Succeeded; Progressing says what runs
    assert _conds(st)["Succeeded"] == ("Unknown", "Continuous")
    assert _conds(st)["Progressing"] == ("True", "Running")


def test_fresh_means_three_poll_intervals_when_longer() -> None:
    cp = following(attempt=1, hb_ago=200)
    slow = {**CONTINUOUS, "sources.pollIntervalSeconds": 70}
    st = run(slow, [((pod(1),), cp, _running_shard())])
    assert _conds(st)["Synced"] == ("True", "CaughtUp")  # 200s < 3 x 70s
    st = run(CONTINUOUS, [((pod(1),), cp, _running_shard())])
    assert _conds(st)["Synced"] == ("False", "CatchingUp")  # 200s > 120s


def test_every_shard_must_be_caught_up_and_lag_is_summed() -> None:
    spec = {**CONTINUOUS, "parallelism.shards": 2}
    caught_up = following(3, attempt=1, synced_ago=30)
    behind = checkpoint(
        4,
        shard=1,
        attempt=1,
        follow=True,
        lag_files=2,
        lag_bytes=100,
        oldest_ago=50,
        synced_ago=600,
    )
    caught_up2 = caught_up.model_copy(update={"lag": Lag(files=1, bytes=5, oldest=NOW)})
    st = run(
        spec,
        [
            ((pod(1),), caught_up2, _running_shard(0)),
            ((pod(1, shard=1),), behind, _running_shard(1)),
        ],
    )
    assert st.phase == ImportPhase.CATCHING_UP
    msg = _cond(st, "Synced").message
    assert "shard 1: catching up (2 file(s), 100 bytes pending" in msg
    assert "shard 0" not in msg
    assert (st.lag.files, st.lag.bytes, st.lag.oldest) == (3, 105, NOW - timedelta(seconds=50))
    # the import's last sync is the oldest of the shards' last catch-ups
    assert st.last_sync_time == NOW - timedelta(seconds=600)


def test_last_sync_unset_until_every_shard_caught_up_once() -> None:
    spec = {**CONTINUOUS, "parallelism.shards": 2}
    st = run(
        spec,
        [
            ((pod(1),), following(attempt=1), _running_shard(0)),
            ((pod(1, shard=1),), checkpoint(shard=1, attempt=1, follow=True), _running_shard(1)),
        ],
    )
    assert st.last_sync_time is None
    assert (st.lag.files, st.lag.bytes, st.lag.oldest) == (0, 0, None)


def test_synced_survives_a_planned_roll() -> None:
    # Between an exit 75 and the next pod's first write, the checkpoint written at the exit
    # still vouches for the data (fresh heartbeat): a rolling import stays Synced.
    hist = ShardStatus(index=0, attempt=1, pod_uid="uid-0-1", progress_mark={"files": 5})
    st = run(CONTINUOUS, [((pod(1, exit_code=75),), following(attempt=1, hb_pod=A1), hist)])
    assert st.shards[0].phase == ShardPhase.PENDING
    assert _conds(st)["Synced"] == ("True", "CaughtUp")
    assert st.restarts.threshold == 1


def test_continuous_suspended() -> None:
    st = run({**CONTINUOUS, "suspend": True}, [((pod(1),), following(attempt=1), _running_shard())])
    assert st.phase == ImportPhase.SUSPENDED
    assert _conds(st)["Synced"] == ("False", "Suspended")
    assert _conds(st)["Progressing"] == ("False", "Suspended")


def test_continuous_failed() -> None:
    hist = ShardStatus(index=0, attempt=1, pod_uid="uid-0-1")
    st = run(CONTINUOUS, [((pod(1, exit_code=78),), following(attempt=1), hist)])
    assert st.phase == ImportPhase.FAILED
    assert _conds(st)["Synced"] == ("False", "Failed")
    assert _conds(st)["Succeeded"] == ("False", "ConfigError")


def test_continuous_exit0_counts_and_never_succeeds() -> None:
    hist = ShardStatus(index=0, attempt=1, pod_uid="uid-0-1")
    cp = following(10, total=10, attempt=1, complete=True)
    st = run(CONTINUOUS, [((pod(1, exit_code=0),), cp, hist)])
    assert st.phase == ImportPhase.SYNCED
    assert (st.restarts.total, st.restarts.exited) == (1, 1)
    assert st.last_restart is not None
    assert st.last_restart.reason == "Exited"
    assert st.current_pods == [f"{NAME}-s0-a2"]


def test_once_mode_has_no_synced_condition_and_switching_back_drops_it() -> None:
    cp = following(attempt=1)
    cont = run(CONTINUOUS, [((pod(1),), cp, _running_shard())])
    assert "Synced" in _conds(cont)
    once = run({}, [((pod(1),), cp, cont.shards[0])], previous=cont)
    assert "Synced" not in _conds(once)
    assert once.phase == ImportPhase.RUNNING
    # lag and last sync are reported in both modes (they come from the checkpoint)
    assert once.last_sync_time == NOW - timedelta(seconds=3)


def test_synced_status_is_stable_while_nothing_changes() -> None:
    first = run(CONTINUOUS, [((pod(1),), following(attempt=1, hb_pod=A1), _running_shard())])
    later = NOW + timedelta(seconds=30)
    cp = following(attempt=1, hb_pod=A1, hb_ago=-25)
    second = run(CONTINUOUS, [((pod(1),), cp, first.shards[0])], previous=first, now=later)
    assert second.to_wire() == first.to_wire()


def test_unreadable_checkpoint_is_degraded_not_fatal() -> None:
    spec = make_spec()
    d = decide(spec, 0, (pod(1),), None, _running_shard(), NOW, 2, import_name=NAME)
    st = summarize(
        spec=spec,
        generation=2,
        previous=EmbeddingImportStatus(),
        decisions=[d],
        checkpoints={0: None},
        now=NOW,
        checkpoint_problems={0: "ConfigMap imp-ckpt-0: a version 1 checkpoint"},
    )
    assert _conds(st)["Degraded"] == ("True", "CheckpointUnreadable")
    assert "shard 0: ConfigMap imp-ckpt-0: a version 1 checkpoint" in _cond(st, "Degraded").message
    assert st.phase == ImportPhase.RUNNING


# --------------------------------------------------------------------------------------------
# Verified: the importers' last verifies (Checkpoint.verify)
# --------------------------------------------------------------------------------------------
def _verified(cp: Checkpoint, **counts: int) -> Checkpoint:
    at = NOW - timedelta(seconds=counts.pop("ago", 30))
    names = {k: [f"{k}.md"] for k in counts}
    v = VerifyResult(at=at, clean=not counts,
                     counts=counts, points=40, names=names)  # fmt: skip
    return cp.model_copy(update={"verify": v})


def _done(i: int, cp: Checkpoint) -> tuple[tuple, Checkpoint, ShardStatus]:
    hist = ShardStatus(index=i, attempt=2, handled_attempt=1, pod_uid=f"uid-{i}-2")
    return ((pod(2, shard=i, exit_code=0),), cp, hist)


def test_no_verify_yet_means_no_verified_condition_and_no_status() -> None:
    st = run({}, [_done(0, checkpoint(10, total=10, complete=True))])
    assert "Verified" not in _conds(st)
    assert st.verify is None


def test_clean_once_import_is_verified() -> None:
    cp = _verified(checkpoint(10, total=10, complete=True))
    st = run({}, [_done(0, cp)])
    assert _conds(st)["Verified"] == ("True", "Clean")
    assert _conds(st)["Succeeded"] == ("True", "Completed")
    assert st.verify is not None
    assert (st.verify.shards_verified, st.verify.damage) == (1, 0)
    assert st.verify.time == NOW - timedelta(seconds=30)


def test_damage_in_one_shard_is_verified_false_with_what_and_how() -> None:
    clean = _verified(checkpoint(10, total=10, complete=True, shard=0), ago=90)
    damaged = _verified(
        checkpoint(10, total=10, complete=True, shard=1), missing_points=3, extra_points=1
    )
    st = run({"parallelism.shards": 2}, [_done(0, clean), _done(1, damaged)])
    cond = _cond(st, "Verified")
    assert (cond.status, cond.reason) == ("False", "Damaged")
    assert cond.message.startswith(
        "shard 1: 3 missing points (missing_points.md), 1 extra point (extra_points.md); "
        "repair with embedding-importer verify --repair"
    ), cond.message
    assert st.verify is not None
    assert st.verify.counts.model_dump() == {
        "missing_points": 3, "extra_points": 1, "orphan_points": 0, "stale_manifest": 0,
        "identity_mismatch": 0,
    }  # fmt: skip
    assert (st.verify.damage, st.verify.shards_verified) == (4, 2)
    assert st.verify.time == NOW - timedelta(seconds=90)  # the least recently verified shard


def test_some_shards_verified_is_unknown_and_has_no_time() -> None:
    st = run(
        {"parallelism.shards": 2},
        [_done(0, _verified(checkpoint(10, total=10, complete=True))),
         ((), checkpoint(3, total=10, shard=1), _running_shard(1))],
    )  # fmt: skip
    assert _conds(st)["Verified"] == ("Unknown", "NotVerified")
    assert st.verify is not None
    assert (st.verify.shards_verified, st.verify.time) == (1, None)


def test_verify_off_drops_the_condition_and_the_status() -> None:
    cp = _verified(checkpoint(10, total=10, complete=True), stale_manifest=1)
    before = run({}, [_done(0, cp)])
    assert _conds(before)["Verified"] == ("False", "Damaged")
    st = run({"verify.intervalSeconds": 0}, [_done(0, cp)], previous=before)
    assert "Verified" not in _conds(st)
    assert st.verify is None


def test_continuous_follower_is_verified_and_repaired_flips_back() -> None:
    damaged = _verified(following(10, total=10), orphan_points=2)
    st = run({"mode": "Continuous"}, [((pod(1),), damaged, _running_shard())])
    assert _conds(st)["Verified"] == ("False", "Damaged")
    assert _conds(st)["Synced"] == ("True", "CaughtUp")
    clean = _verified(following(10, total=10))
    again = run({"mode": "Continuous"}, [((pod(1),), clean, _running_shard())], previous=st)
    assert _conds(again)["Verified"] == ("True", "Clean")
