"""Reasons the operator shows users, one enum per place they appear.

The string values are API: they appear in Events, conditions, ``status.shards[].reason``,
printer columns, the docs and the e2e tests. Each enum holds only what its place can use:

- :class:`StartReason`: why a shard's next pod starts (shard reason and Normal event);
- :class:`EndReason`: why a shard's pod or the shard itself ended (shard reason and event);
- :class:`StateReason`: what a shard is doing while nothing starts or ends (shard reason);
- :class:`EventReason`: events only, never a shard's or a condition's reason;
- :class:`ConditionReason`: reasons of the import's conditions (``status.py``).

A shard's reason (``ShardReason``) is one of the first three; values are unique across all.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from eio_operator.models import RestartCause


class StartReason(StrEnum):
    STARTED = "Started"
    RESTARTED = "Restarted"
    RESUMED = "Resumed"
    RETRYING = "Retrying"
    BACKOFF_EXPIRED = "BackoffExpired"
    FOLLOWING = "Following"  # a finished shard follows its source after a switch to Continuous


class EndReason(StrEnum):
    THRESHOLD = "Threshold"
    OOM_KILLED = "OOMKilled"
    OVER_THRESHOLD = "OverThreshold"
    STALLED = "Stalled"
    EVICTED = "Evicted"
    KILLED = "Killed"
    EXITED = "Exited"  # Continuous: the importer exited 0 (it should follow for good)
    CRASH = "Crash"
    COMPLETED = "Completed"
    SUPERSEDED = "Superseded"  # exit 79: a newer attempt owns the shard; not a restart
    SPEC_CHANGED = "SpecChanged"  # build fields changed: ended gracefully; not a restart
    CONFIG_ERROR = "ConfigError"
    BUDGET_EXHAUSTED = "BudgetExhausted"  # the shard failed: too many failures, no progress


class StateReason(StrEnum):
    RUNNING = "Running"
    WAITING = "Waiting"  # running, but the importer reports it waits (e.g. Qdrant unreachable)
    PENDING = "Pending"
    POD_NOT_STARTING = "PodNotStarting"
    TERMINATING = "Terminating"
    BACKING_OFF = "BackingOff"
    SUSPENDED = "Suspended"
    STOPPED = "Stopped"  # another shard failed the import
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


ShardReason = StartReason | EndReason | StateReason


class EventReason(StrEnum):
    MEMORY_LIMIT_RAISED = "MemoryLimitRaised"
    POD_CREATE_FAILED = "PodCreateFailed"
    CHECKPOINT_UNREADABLE = "CheckpointUnreadable"
    STATUS_UNREADABLE = "StatusUnreadable"
    INVALID_SPEC = "InvalidSpec"
    VERIFY_FOUND_DAMAGE = "VerifyFoundDamage"
    NODE_LOST = "NodeLost"  # a pod on a lost node: force-deleted, or waiting for its store
    REBUILD_STARTED = "RebuildStarted"  # a new version of the collection is being filled
    REBUILD_SWITCH_ORDERED = "RebuildSwitchOrdered"  # several shards: every one is ready
    REBUILD_SWITCHED = "RebuildSwitched"  # searches read the new version from now on


class ConditionReason(StrEnum):
    IN_PROGRESS = "InProgress"
    STARTING = "Starting"
    RUNNING = "Running"
    WAITING = "Waiting"
    BACKING_OFF = "BackingOff"
    POD_TERMINATING = "PodTerminating"  # the next pod waits for a pod of the shard to end
    SUSPENDED = "Suspended"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CONFIG_ERROR = "ConfigError"
    BUDGET_EXHAUSTED = "BudgetExhausted"
    CONTINUOUS = "Continuous"
    CAUGHT_UP = "CaughtUp"
    CATCHING_UP = "CatchingUp"
    AS_EXPECTED = "AsExpected"
    RETRYING_WITHOUT_PROGRESS = "RetryingWithoutProgress"
    POD_NOT_STARTING = "PodNotStarting"
    CHECKPOINT_UNREADABLE = "CheckpointUnreadable"
    STATUS_UNREADABLE = "StatusUnreadable"
    INVALID_SPEC = "InvalidSpec"
    CLEAN = "Clean"
    DAMAGED = "Damaged"
    NOT_VERIFIED = "NotVerified"
    STORE_ON_LOST_NODE = "StoreOnLostNode"  # NodeLost: the embedded store is on the lost node
    FORCE_DELETED = "ForceDeleted"  # NodeLost: the pod was force-deleted to restart elsewhere
    NODES_HEALTHY = "NodesHealthy"  # NodeLost False: no pod on a lost node any more
    SETTINGS_CHANGED = "SettingsChanged"  # Rebuilding True: a new version is being filled
    CURRENT = "Current"  # Rebuilding False: searches read a version built with the spec


CAUSE_REASON: Final[dict[RestartCause, EndReason]] = {
    RestartCause.THRESHOLD: EndReason.THRESHOLD,
    RestartCause.OOM_KILLED: EndReason.OOM_KILLED,
    RestartCause.OVER_THRESHOLD: EndReason.OVER_THRESHOLD,
    RestartCause.STALLED: EndReason.STALLED,
    RestartCause.EVICTED: EndReason.EVICTED,
    RestartCause.KILLED: EndReason.KILLED,
    RestartCause.EXITED: EndReason.EXITED,
    RestartCause.CRASH: EndReason.CRASH,
}

_SHARD_REASONS: Final[dict[str, ShardReason]] = {
    r.value: r for enum in (StartReason, EndReason, StateReason) for r in enum
}


def shard_reason(value: str, default: ShardReason = StateReason.PENDING) -> ShardReason:
    """The typed reason of a ``ShardStatus.reason`` read back from the status (``default``
    for an empty or unknown one, e.g. written by another operator version)."""
    return _SHARD_REASONS.get(value, default)
