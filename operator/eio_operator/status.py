"""Status derivation: conditions, phase, progress and counters from the shards' decisions. Pure.

Condition types (API conventions: a summary condition plus detail conditions, keyed by type):

- ``Succeeded``: True/Completed when every shard finished; False when the import failed
  (ConfigError, BudgetExhausted); Unknown while in progress (InProgress, Suspended, InvalidSpec).
- ``Progressing``: True while pods run or are about to (Running, Starting, BackingOff); False
  when Completed, Failed, Suspended or InvalidSpec.
- ``Degraded``: True when something needs a human or retries without progress (InvalidSpec,
  ConfigError, BudgetExhausted, PodNotStarting, RetryingWithoutProgress); else AsExpected.

``phase`` is derived from the conditions for ``kubectl get`` and nothing reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal

from eio_operator.decision import CAUSE_REASON, Decision, Reason
from eio_operator.models import (
    Condition,
    EmbeddingImportSpec,
    EmbeddingImportStatus,
    ImportPhase,
    LastRestart,
    ProgressCounts,
    ShardCheckpointRef,
    ShardPhase,
    ShardStatus,
)
from importer.contract import Checkpoint

SUCCEEDED = "Succeeded"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
INVALID_SPEC = "InvalidSpec"
ConditionStatus = Literal["True", "False", "Unknown"]

_LIVE = (ShardPhase.PENDING, ShardPhase.RUNNING, ShardPhase.TERMINATING)


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    generation: int,
) -> list[Condition]:
    """Replace the condition of ``type_``; keep lastTransitionTime if status did not change."""
    old = next((c for c in conditions if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == status else now
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    out = [c for c in conditions if c.type != type_]
    out.append(new)
    order = {SUCCEEDED: 0, PROGRESSING: 1, DEGRADED: 2}
    return sorted(out, key=lambda c: (order.get(c.type, 9), c.type))


def progress_text(counts: ProgressCounts, all_reported: bool, complete: bool) -> str:
    """ "420/1000 (42%)"; "420/?" while some shard has not reported its file count yet."""
    if not all_reported and not complete:
        return f"{counts.files_done}/?"
    total = counts.files_total
    pct = 100 if complete and total == 0 else (100 * counts.files_done // total if total else 0)
    return f"{counts.files_done}/{total} ({pct}%)"


def phase_of(conditions: Sequence[Condition]) -> ImportPhase:
    by_type = {c.type: c for c in conditions}
    succeeded, progressing, degraded = (
        by_type.get(SUCCEEDED),
        by_type.get(PROGRESSING),
        by_type.get(DEGRADED),
    )
    if succeeded is not None and succeeded.status == "True":
        return ImportPhase.SUCCEEDED
    if succeeded is not None and succeeded.status == "False":
        return ImportPhase.FAILED
    if degraded is not None and degraded.status == "True" and degraded.reason == INVALID_SPEC:
        return ImportPhase.INVALID
    if progressing is not None and progressing.reason == Reason.SUSPENDED:
        return ImportPhase.SUSPENDED
    if progressing is not None and progressing.reason in (
        Reason.RUNNING, Reason.BACKING_OFF, Reason.WAITING
    ):
        return ImportPhase.RUNNING
    return ImportPhase.PENDING


def summarize(
    *,
    spec: EmbeddingImportSpec,
    generation: int,
    previous: EmbeddingImportStatus,
    decisions: Sequence[Decision],
    checkpoints: Mapping[int, Checkpoint | None],
    now: datetime,
) -> EmbeddingImportStatus:
    """The import's status after this round of decisions."""
    shards = [d.shard for d in decisions]
    restarts = previous.restarts
    last = previous.last_restart
    for d in decisions:
        if d.restart is not None:
            restarts = restarts.add(d.restart)
            last = LastRestart(
                reason=CAUSE_REASON[d.restart],
                time=now,
                shard=d.shard.index,
                pod=d.ended,
                message=d.shard.message,
            )
    counts = ProgressCounts()
    for cp in checkpoints.values():
        if cp is None:
            continue
        counts = ProgressCounts(
            files_done=counts.files_done + cp.files_done,
            files_total=counts.files_total + cp.files_total,
            records=counts.records + cp.counters.records,
            chunks=counts.chunks + cp.counters.chunks,
            points=counts.points + cp.counters.points,
        )
    all_reported = all(checkpoints.get(s.index) is not None for s in shards)
    complete = bool(shards) and all(s.phase == ShardPhase.SUCCEEDED for s in shards)
    conditions = _conditions(spec, shards, previous.conditions, counts, now, generation)
    return EmbeddingImportStatus(
        observed_generation=generation,
        phase=phase_of(conditions),
        progress=progress_text(counts, all_reported, complete),
        counts=counts,
        restarts=restarts,
        last_restart=last,
        current_pods=sorted(s.pod for s in shards if s.phase in _LIVE and s.pod),
        checkpoint_refs=[
            ShardCheckpointRef(shard=s.index, name=s.checkpoint_ref.name)
            for s in shards
            if s.checkpoint_ref is not None
        ],
        shards=shards,
        conditions=conditions,
    )


def _conditions(
    spec: EmbeddingImportSpec,
    shards: Sequence[ShardStatus],
    previous: Sequence[Condition],
    counts: ProgressCounts,
    now: datetime,
    generation: int,
) -> list[Condition]:
    n = len(shards)
    failed = [s for s in shards if s.phase == ShardPhase.FAILED]
    done = [s for s in shards if s.phase == ShardPhase.SUCCEEDED]
    stuck = [s for s in shards if s.reason == Reason.POD_NOT_STARTING]
    retrying = [s for s in shards if s.failures_without_progress > 0 and s not in failed]
    running = [s for s in shards if s.phase == ShardPhase.RUNNING]
    waiting = [s for s in running if s.reason == Reason.WAITING]
    backing_off = [s for s in shards if s.phase == ShardPhase.BACKING_OFF]

    conds = list(previous)

    def put(type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(conds, type_, status, reason, message, now, generation)

    if failed:
        first = failed[0]
        msg = f"shard {first.index}: {first.message}"
        put(SUCCEEDED, "False", first.reason or Reason.FAILED, msg)
        put(PROGRESSING, "False", Reason.FAILED, msg)
        put(DEGRADED, "True", first.reason or Reason.FAILED, msg)
        return conds
    if n and len(done) == n:
        msg = (f"all {n} shard(s) finished: {counts.files_done} files, "
               f"{counts.points} points")
        put(SUCCEEDED, "True", Reason.COMPLETED, msg)
        put(PROGRESSING, "False", Reason.COMPLETED, msg)
        put(DEGRADED, "False", "AsExpected", "")
        return conds
    if spec.suspend:
        put(SUCCEEDED, "Unknown", Reason.SUSPENDED, "spec.suspend is true")
        put(PROGRESSING, "False", Reason.SUSPENDED,
            "spec.suspend is true: no importer pods run; checkpoints are kept")
    else:
        put(SUCCEEDED, "Unknown", "InProgress", f"{len(done)}/{n} shard(s) finished")
        if waiting:
            put(PROGRESSING, "True", Reason.WAITING,
                "; ".join(f"shard {s.index}: {s.message}" for s in waiting))
        elif running:
            put(PROGRESSING, "True", Reason.RUNNING, f"{len(running)}/{n} shard(s) running")
        elif backing_off and len(backing_off) + len(done) == n:
            put(PROGRESSING, "True", Reason.BACKING_OFF,
                "; ".join(f"shard {s.index}: {s.message}" for s in backing_off))
        else:
            put(PROGRESSING, "True", "Starting", "importer pods are being started")
    if stuck:
        put(DEGRADED, "True", Reason.POD_NOT_STARTING,
            "; ".join(f"shard {s.index}: {s.message}" for s in stuck))
    elif retrying:
        put(DEGRADED, "True", "RetryingWithoutProgress",
            "; ".join(f"shard {s.index}: {s.failures_without_progress} failure(s) without "
                      f"progress (retryBudget {spec.memory_policy.retry_budget})"
                      for s in retrying))
    else:
        put(DEGRADED, "False", "AsExpected", "")
    return conds


def invalid_spec_status(
    previous: EmbeddingImportStatus, message: str, now: datetime, generation: int
) -> EmbeddingImportStatus:
    """Status for a spec the operator cannot act on: Degraded/InvalidSpec, nothing else changes."""
    conds = set_condition(previous.conditions, DEGRADED, "True", INVALID_SPEC, message, now,
                          generation)
    conds = set_condition(conds, PROGRESSING, "False", INVALID_SPEC,
                          "the spec is invalid; fix it to continue", now, generation)
    if not any(c.type == SUCCEEDED for c in conds):
        conds = set_condition(conds, SUCCEEDED, "Unknown", INVALID_SPEC, message, now, generation)
    return previous.model_copy(
        update={"observed_generation": generation, "conditions": conds, "phase": phase_of(conds)}
    )
