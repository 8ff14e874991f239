"""Status derivation: conditions, phase, progress and counters from the shards' decisions. Pure.

Condition types (API conventions: a summary condition plus detail conditions, keyed by type):

- ``Succeeded``: True/Completed when every shard finished; False when the import failed
  (ConfigError, BudgetExhausted); Unknown while in progress (InProgress, Suspended, InvalidSpec).
- ``Progressing``: True while pods run or are about to (Running, Starting, BackingOff); False
  when Completed, Failed, Suspended or InvalidSpec.
- ``Degraded``: True when something needs a human or retries without progress (InvalidSpec,
  ConfigError, BudgetExhausted, PodNotStarting, RetryingWithoutProgress, CheckpointUnreadable);
  else AsExpected.
- ``Synced`` (mode Continuous only): True/CaughtUp when every shard's checkpoint says the
  importer follows its source and has imported every change it saw, and its heartbeat is fresh
  (younger than :func:`fresh_seconds`); False/CatchingUp with the lag otherwise; False/Suspended
  or False/Failed. ``Succeeded`` stays Unknown/Continuous: a continuous import never finishes.
- ``Verified`` (unless ``spec.verify.intervalSeconds`` is 0): the importers' last verifies of
  their stores (``Checkpoint.verify``, at the end of a Once import and on the interval while a
  Continuous one is caught up). True/Clean when every shard's was clean; False/Damaged when
  any found damage (the message says which shard, what and how to repair);
  Unknown/NotVerified while only some shards have verified; absent until one has.
- ``Rebuilding`` (absent until an importer reports its build state, ``Checkpoint.build``):
  True/SettingsChanged while a new version of the collection is filled beside the one
  searches read (the message has the differences and the progress); False/Current once
  searches read a version built with the spec. With several shards the message also says which
  shards are ready for the operator's switch order and which still fill (``eio_operator.switch``).

``phase`` is derived from the conditions for ``kubectl get`` and nothing reads it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from eio_common.contract import VERIFY_DAMAGE, Checkpoint, Lag, VerifyResult
from eio_operator.decision import Decision
from eio_operator.models import (
    Condition,
    EmbeddingImportSpec,
    EmbeddingImportStatus,
    ImportBuild,
    ImportLag,
    ImportPhase,
    ImportVerify,
    LastRestart,
    ProgressCounts,
    RestartCounts,
    ShardCheckpointRef,
    ShardPhase,
    ShardStatus,
    VerifyCounts,
)
from eio_operator.reasons import (
    CAUSE_REASON,
    ConditionReason,
    EndReason,
    EventReason,
    StateReason,
)

SUCCEEDED = "Succeeded"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
SYNCED = "Synced"
VERIFIED = "Verified"
REBUILDING = "Rebuilding"
MIN_FRESH_SECONDS = 120
ConditionStatus = Literal["True", "False", "Unknown"]

_LIVE = (ShardPhase.PENDING, ShardPhase.RUNNING, ShardPhase.TERMINATING)


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: ConditionReason,
    message: str,
    now: datetime,
    generation: int,
) -> list[Condition]:
    """Replace the condition of ``type_``; keep lastTransitionTime if status did not change."""
    old = next((c for c in conditions if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == status else now
    new = Condition(type=type_, status=status, reason=reason, message=message,
                    last_transition_time=since, observed_generation=generation)  # fmt: skip
    out = [c for c in conditions if c.type != type_]
    out.append(new)
    order = {SUCCEEDED: 0, PROGRESSING: 1, DEGRADED: 2, SYNCED: 3}
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
    invalid = ConditionReason.INVALID_SPEC
    if degraded is not None and degraded.status == "True" and degraded.reason == invalid:
        return ImportPhase.INVALID
    if progressing is not None and progressing.reason == ConditionReason.SUSPENDED:
        return ImportPhase.SUSPENDED
    synced = by_type.get(SYNCED)
    if synced is not None:
        return ImportPhase.SYNCED if synced.status == "True" else ImportPhase.CATCHING_UP
    if progressing is not None and progressing.reason in (
        ConditionReason.RUNNING,
        ConditionReason.BACKING_OFF,
        ConditionReason.WAITING,
        ConditionReason.POD_TERMINATING,
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
    checkpoint_problems: Mapping[int, str] | None = None,
    status_problem: str | None = None,
    read_service: str | None = None,
    switch_text: str | None = None,
) -> EmbeddingImportStatus:
    """The import's status after this round of decisions.

    ``read_service``: the Service to the read APIs of its pods (an embedded store), if any.
    ``switch_text``: where a rebuild of several shards stands (``switch.readiness_text``).

    ``checkpoint_problems`` names the shards whose checkpoint could not be read (their entry
    in ``checkpoints`` is None): the import is Degraded/CheckpointUnreadable until it is.
    ``status_problem`` says what of the previous status could not be read (and was dropped):
    the import is Degraded/StatusUnreadable until its spec changes (a new generation).
    """
    shards = [d.shard for d in decisions]
    restarts, last = _restarts(previous, decisions, now)
    counts = total_counts(checkpoints.values())
    all_reported = all(checkpoints.get(s.index) is not None for s in shards)
    complete = bool(shards) and all(s.phase == ShardPhase.SUCCEEDED for s in shards)
    round_ = _Round(
        now=now,
        generation=generation,
        spec=spec,
        shards=shards,
        checkpoints=checkpoints,
        problems=checkpoint_problems or {},
        status_problem=status_problem,
        switch_text=switch_text,
    )
    conditions = _conditions(round_, previous.conditions, counts)
    build = build_summary(checkpoints)
    conditions = _rebuilding_condition(round_, conditions, build)
    return EmbeddingImportStatus(
        observed_generation=generation,
        phase=phase_of(conditions),
        progress=progress_text(counts, all_reported, complete),
        counts=counts,
        lag=total_lag(checkpoints.values()),
        last_sync_time=last_sync(shards, checkpoints),
        restarts=restarts,
        last_restart=last,
        current_pods=sorted(s.pod for s in shards if s.phase in _LIVE and s.pod),
        read_service=read_service,
        verify=verify_summary(spec, checkpoints) if spec.verify.interval_seconds else None,
        active_version=build.active if build is not None else None,
        build=build,
        checkpoint_refs=_checkpoint_refs(shards),
        shards=shards,
        conditions=conditions,
    )


def _checkpoint_refs(shards: Sequence[ShardStatus]) -> list[ShardCheckpointRef]:
    return [
        ShardCheckpointRef(shard=s.index, name=s.checkpoint_ref.name)
        for s in shards
        if s.checkpoint_ref is not None
    ]


def _restarts(
    previous: EmbeddingImportStatus, decisions: Sequence[Decision], now: datetime
) -> tuple[RestartCounts, LastRestart | None]:
    """The restart counters with this round's restarts added, and the last restart."""
    restarts, last = previous.restarts, previous.last_restart
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
    return restarts, last


def total_counts(checkpoints: Iterable[Checkpoint | None]) -> ProgressCounts:
    """Files and work counters summed over the shards' checkpoints."""
    present = [cp for cp in checkpoints if cp is not None]
    return ProgressCounts(
        files_done=sum(cp.files_done for cp in present),
        files_total=sum(cp.files_total for cp in present),
        records=sum(cp.counters.records for cp in present),
        chunks=sum(cp.counters.chunks for cp in present),
        points=sum(cp.counters.points for cp in present),
    )


# --------------------------------------------------------------------------------------------
# Live sources: lag, last sync, Synced
# --------------------------------------------------------------------------------------------
def total_lag(checkpoints: Iterable[Checkpoint | None]) -> ImportLag:
    """The shards' lag summed; ``oldest`` is the oldest pending change of any shard."""
    present = [cp for cp in checkpoints if cp is not None]
    oldest = [_aware(cp.lag.oldest) for cp in present if cp.lag.oldest is not None]
    return ImportLag(
        files=sum(cp.lag.files for cp in present),
        bytes=sum(cp.lag.bytes for cp in present),
        oldest=min(oldest) if oldest else None,
    )


def last_sync(
    shards: Sequence[ShardStatus], checkpoints: Mapping[int, Checkpoint | None]
) -> datetime | None:
    """The oldest of the shards' last catch-up times; None until every shard caught up once."""
    times: list[datetime] = []
    for s in shards:
        cp = checkpoints.get(s.index)
        if cp is None or cp.last_sync is None:
            return None
        times.append(_aware(cp.last_sync))
    return min(times) if times else None


def fresh_seconds(spec: EmbeddingImportSpec) -> int:
    """A heartbeat older than this does not vouch for Synced: three poll intervals, at least
    MIN_FRESH_SECONDS (an idle importer still writes one now and then; a roll takes a while)."""
    return max(MIN_FRESH_SECONDS, 3 * spec.sources.poll_interval_seconds)


def shard_behind(
    spec: EmbeddingImportSpec, index: int, cp: Checkpoint | None, now: datetime
) -> str | None:
    """Why shard ``index`` is not caught up, or None when its checkpoint says it is."""
    if cp is None:
        return f"shard {index}: no checkpoint yet"
    if not cp.follow:
        return f"shard {index}: its importer does not follow the source yet"
    if not cp.synced:
        return f"shard {index}: catching up ({lag_text(cp.lag)})"
    if (now - _aware(cp.heartbeat.time)).total_seconds() > fresh_seconds(spec):
        return (
            f"shard {index}: no heartbeat since {_iso(cp.heartbeat.time)} "
            f"(fresh means under {fresh_seconds(spec)}s)"
        )
    return None


def lag_text(lag: Lag | ImportLag) -> str:
    text = f"{lag.files} file(s), {lag.bytes} bytes pending"
    if lag.oldest is not None:
        text += f", oldest change at {_iso(lag.oldest)}"
    return text


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _iso(t: datetime) -> str:
    return _aware(t).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# Conditions
# --------------------------------------------------------------------------------------------
@dataclass
class _Conditions:
    """Conditions as they are being set, at one time and generation."""

    now: datetime
    generation: int
    conds: list[Condition] = field(default_factory=list)

    def put(
        self, type_: str, status: ConditionStatus, reason: ConditionReason, message: str
    ) -> None:
        self.conds = set_condition(
            self.conds, type_, status, reason, message, self.now, self.generation
        )

    def drop(self, type_: str) -> None:
        self.conds = [c for c in self.conds if c.type != type_]


@dataclass(kw_only=True)
class _Round(_Conditions):
    """One round's inputs to the conditions, and the conditions as they are being set."""

    spec: EmbeddingImportSpec
    shards: Sequence[ShardStatus]
    checkpoints: Mapping[int, Checkpoint | None]
    problems: Mapping[int, str]
    status_problem: str | None
    switch_text: str | None = None


_FAILURE_REASON: dict[str, ConditionReason] = {
    EndReason.CONFIG_ERROR: ConditionReason.CONFIG_ERROR,
    EndReason.BUDGET_EXHAUSTED: ConditionReason.BUDGET_EXHAUSTED,
}


def _conditions(
    r: _Round, previous: Sequence[Condition], counts: ProgressCounts
) -> list[Condition]:
    r.conds = list(previous)
    _verified_condition(r)
    n = len(r.shards)
    failed = [s for s in r.shards if s.phase == ShardPhase.FAILED]
    done = [s for s in r.shards if s.phase == ShardPhase.SUCCEEDED]
    if failed:
        first = failed[0]
        msg = f"shard {first.index}: {first.message}"
        why = _FAILURE_REASON.get(first.reason, ConditionReason.FAILED)
        r.put(SUCCEEDED, "False", why, msg)
        r.put(PROGRESSING, "False", ConditionReason.FAILED, msg)
        r.put(DEGRADED, "True", why, msg)
        if r.spec.continuous:
            r.put(SYNCED, "False", ConditionReason.FAILED, f"the import failed: {msg}")
        else:
            r.drop(SYNCED)
        return r.conds
    if n and len(done) == n and not r.spec.continuous:
        msg = f"all {n} shard(s) finished: {counts.files_done} files, {counts.points} points"
        r.put(SUCCEEDED, "True", ConditionReason.COMPLETED, msg)
        r.put(PROGRESSING, "False", ConditionReason.COMPLETED, msg)
        r.put(DEGRADED, "False", ConditionReason.AS_EXPECTED, "")
        r.drop(SYNCED)
        return r.conds
    _progress_conditions(r, len(done))
    _degraded_condition(r)
    if r.spec.continuous:
        _synced_condition(r)
    else:
        r.drop(SYNCED)
    return r.conds


def _progress_conditions(r: _Round, done: int) -> None:
    """Succeeded (Unknown while in progress) and Progressing."""
    n = len(r.shards)
    if r.spec.suspend:
        r.put(SUCCEEDED, "Unknown", ConditionReason.SUSPENDED, "spec.suspend is true")
        r.put(
            PROGRESSING,
            "False",
            ConditionReason.SUSPENDED,
            "spec.suspend is true: no importer pods run; checkpoints are kept",
        )
        return
    if r.spec.continuous:
        r.put(
            SUCCEEDED,
            "Unknown",
            ConditionReason.CONTINUOUS,
            "mode Continuous: the import follows its sources until it is deleted "
            "(see the Synced condition)",
        )
    else:
        r.put(SUCCEEDED, "Unknown", ConditionReason.IN_PROGRESS, f"{done}/{n} shard(s) finished")
    running = [s for s in r.shards if s.phase == ShardPhase.RUNNING]
    waiting = [s for s in running if s.reason == StateReason.WAITING]
    backing_off = [s for s in r.shards if s.phase == ShardPhase.BACKING_OFF]
    terminating = [s for s in r.shards if s.phase == ShardPhase.TERMINATING]
    if waiting:
        r.put(
            PROGRESSING,
            "True",
            ConditionReason.WAITING,
            _by_shard(waiting),
        )
    elif running:
        r.put(PROGRESSING, "True", ConditionReason.RUNNING, f"{len(running)}/{n} shard(s) running")
    elif backing_off and len(backing_off) + done == n:
        r.put(
            PROGRESSING,
            "True",
            ConditionReason.BACKING_OFF,
            _by_shard(backing_off),
        )
    elif terminating:  # never "being started" while the next pod waits for one to end
        r.put(
            PROGRESSING,
            "True",
            ConditionReason.POD_TERMINATING,
            _by_shard(terminating),
        )
    else:
        r.put(PROGRESSING, "True", ConditionReason.STARTING, "importer pods are being started")


def _by_shard(shards: Sequence[ShardStatus]) -> str:
    """``shard 0: <its message>; shard 2: ...``"""
    return "; ".join(f"shard {s.index}: {s.message}" for s in shards)


def _degraded_condition(r: _Round) -> None:
    stuck = [s for s in r.shards if s.reason == StateReason.POD_NOT_STARTING]
    retrying = [s for s in r.shards if s.failures_without_progress > 0]
    if stuck:
        r.put(
            DEGRADED,
            "True",
            ConditionReason.POD_NOT_STARTING,
            _by_shard(stuck),
        )
    elif retrying:
        r.put(
            DEGRADED,
            "True",
            ConditionReason.RETRYING_WITHOUT_PROGRESS,
            "; ".join(
                f"shard {s.index}: {s.failures_without_progress} failure(s) without "
                f"progress (retryBudget {r.spec.memory_policy.retry_budget})"
                for s in retrying
            ),
        )
    elif r.problems:
        r.put(
            DEGRADED,
            "True",
            ConditionReason.CHECKPOINT_UNREADABLE,
            "; ".join(f"shard {i}: {p}" for i, p in sorted(r.problems.items())),
        )
    elif r.status_problem is not None:
        r.put(DEGRADED, "True", ConditionReason.STATUS_UNREADABLE, r.status_problem)
    elif _still_unreadable(r):
        pass  # reported for this generation: kept until the spec changes
    else:
        r.put(DEGRADED, "False", ConditionReason.AS_EXPECTED, "")


def _still_unreadable(r: _Round) -> bool:
    old = next((c for c in r.conds if c.type == DEGRADED), None)
    return (
        old is not None
        and old.reason == ConditionReason.STATUS_UNREADABLE
        and old.observed_generation == r.generation
    )


def _synced_condition(r: _Round) -> None:
    if r.spec.suspend:
        r.put(
            SYNCED,
            "False",
            ConditionReason.SUSPENDED,
            "spec.suspend is true: changes to the sources wait until it is resumed",
        )
        return
    behind = [
        why
        for s in r.shards
        if (why := shard_behind(r.spec, s.index, r.checkpoints.get(s.index), r.now)) is not None
    ]
    if not behind:
        r.put(
            SYNCED,
            "True",
            ConditionReason.CAUGHT_UP,
            f"all {len(r.shards)} shard(s) imported every change they have seen",
        )
        return
    lag = total_lag(r.checkpoints.values())
    r.put(SYNCED, "False", ConditionReason.CATCHING_UP, f"{lag_text(lag)}; {'; '.join(behind)}")


_KIND_TEXT: dict[str, tuple[str, str]] = {
    "missing_points": ("missing point", "missing points"),
    "extra_points": ("extra point", "extra points"),
    "orphan_points": ("orphan point", "orphan points"),
    "stale_manifest": ("stale manifest entry", "stale manifest entries"),
    "identity_mismatch": ("build setting changed", "build settings changed"),
}


def damage_text(v: VerifyResult) -> str:
    """``3 missing points (docs-0.jsonl), 1 extra point (a.md)``: a verify's damage in words."""
    parts = []
    for kind in VERIFY_DAMAGE:
        n = v.counts.get(kind, 0)
        if n:
            one, many = _KIND_TEXT[kind]
            names = v.names.get(kind, [])
            where = f" ({', '.join(names)})" if names else ""
            parts.append(f"{n} {one if n == 1 else many}{where}")
    return ", ".join(parts)


def verify_summary(
    spec: EmbeddingImportSpec, checkpoints: Mapping[int, Checkpoint | None]
) -> ImportVerify | None:
    """The shards' last verifies summed (None until one has run); ``time`` once all have."""
    done = [v for i in range(spec.shards) if (cp := checkpoints.get(i)) and (v := cp.verify)]
    if not done:
        return None
    counts = {k: sum(v.counts.get(k, 0) for v in done) for k in VERIFY_DAMAGE}
    return ImportVerify(
        time=min(_aware(v.at) for v in done) if len(done) == spec.shards else None,
        shards_verified=len(done),
        damage=sum(counts.values()),
        counts=VerifyCounts(**counts),
    )


def _verified_condition(r: _Round) -> None:
    """Absent until a shard has verified (or with verifying off); see the module doc."""
    found = {i: cp.verify for i, cp in r.checkpoints.items() if cp is not None and cp.verify}
    if not r.spec.verify.interval_seconds or not found:
        r.drop(VERIFIED)
        return
    damaged = [f"shard {i}: {damage_text(v)}" for i, v in sorted(found.items()) if not v.clean]
    n = r.spec.shards
    if damaged:
        r.put(
            VERIFIED,
            "False",
            ConditionReason.DAMAGED,
            f"{'; '.join(damaged)}; repair with embedding-importer verify --repair "
            "(docs/live-sources.md, Verify)",
        )
    elif len(found) < n:
        r.put(
            VERIFIED,
            "Unknown",
            ConditionReason.NOT_VERIFIED,
            f"{len(found)}/{n} shard(s) verified (clean so far): the importer verifies at "
            "the end of a Once import and while a Continuous one is caught up",
        )
    else:
        r.put(
            VERIFIED,
            "True",
            ConditionReason.CLEAN,
            f"all {n} shard(s) verified: the points and the manifest agree with the sources",
        )


def invalid_spec_status(
    previous: EmbeddingImportStatus, message: str, now: datetime, generation: int
) -> EmbeddingImportStatus:
    """Status for a spec the operator cannot act on: Degraded/InvalidSpec, nothing else changes."""
    invalid = ConditionReason.INVALID_SPEC
    r = _Conditions(now, generation, list(previous.conditions))
    r.put(DEGRADED, "True", invalid, message)
    r.put(PROGRESSING, "False", invalid, "the spec is invalid; fix it to continue")
    if previous.condition(SUCCEEDED) is None:
        r.put(SUCCEEDED, "Unknown", invalid, message)
    conds = r.conds
    return previous.evolve(observed_generation=generation, conditions=conds, phase=phase_of(conds))


# --------------------------------------------------------------------------------------------
# Build: which version searches read, which one a rebuild fills
# --------------------------------------------------------------------------------------------
def build_summary(checkpoints: Mapping[int, Checkpoint | None]) -> ImportBuild | None:
    """The shards' build states together (None: no importer reported one yet). With several
    shards ``active`` lists each version some shard's searches read (two only between the
    switch order and the last shard's switch) and ``target`` the versions being filled."""
    found = [(cp, b) for cp in checkpoints.values() if cp is not None and (b := cp.build)]
    if not found:
        return None
    actives = sorted({b.active for _, b in found})
    filling = [(cp, b) for cp, b in found if b.target]
    diffs = list(dict.fromkeys(d for _, b in filling for d in b.differences))
    switched = [_aware(b.switched_at) for _, b in found if b.switched_at is not None]
    return ImportBuild(
        active=",".join(actives),
        target=",".join(sorted({b.target for _, b in filling if b.target})) or None,
        differences=diffs,
        files_done=sum(cp.files_done for cp, _ in filling),
        files_total=sum(cp.files_total for cp, _ in filling),
        switched_at=max(switched) if switched else None,
    )


def rebuild_text(b: ImportBuild) -> str:
    """``chunk size 120 -> 60: 12/40 files into convs--v2; searches read convs``."""
    what = "; ".join(b.differences) or "new build settings"
    return f"{what}: {b.files_done}/{b.files_total} files into {b.target}; searches read {b.active}"


def _rebuilding_condition(
    r: _Round, conds: list[Condition], build: ImportBuild | None
) -> list[Condition]:
    r.conds = conds
    if build is None:
        r.drop(REBUILDING)
    elif build.target:
        text = rebuild_text(build)
        r.put(
            REBUILDING,
            "True",
            ConditionReason.SETTINGS_CHANGED,
            f"{text}; {r.switch_text}" if r.switch_text else text,
        )
    else:
        when = f" (switched {_iso(build.switched_at)})" if build.switched_at else ""
        r.put(
            REBUILDING,
            "False",
            ConditionReason.CURRENT,
            f"searches read {build.active}, built with the spec's settings{when}",
        )
    return r.conds


def build_events(
    previous: ImportBuild | None, current: ImportBuild | None
) -> list[tuple[EventReason, str]]:
    """(reason, message) of the Normal events a change of build state calls for: a rebuild
    started (a new target), searches switched (the active version changed on every shard)."""
    if current is None:
        return []
    out: list[tuple[EventReason, str]] = []
    before = previous.target if previous is not None else None
    if current.target and current.target != before:
        out.append((EventReason.REBUILD_STARTED, f"filling {rebuild_text(current)}"))
    agreed = "," not in current.active  # several shards: once every one has switched
    if previous is not None and previous.active and previous.active != current.active and agreed:
        old = ",".join(v for v in previous.active.split(",") if v != current.active)
        out.append(
            (EventReason.REBUILD_SWITCHED, f"searches read {current.active} (before: {old})")
        )
    return out
