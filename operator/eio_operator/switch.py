"""The coordinated switch of a rebuild with several shards. Pure.

Each shard's importer (``--switch-on-order``) fills its new version of the collection and
reports it ready in its checkpoint (``BuildState``: ``target``, ``ready_at``, ``digest``). The
operator is the one writer of the decision: once *every* shard is ready with the same digest it
sets the switch order (``contract.SWITCH_ANNOTATION``) to that digest on every shard's
checkpoint ConfigMap, and the shards switch readers; once every shard reports that digest
active (``target`` None), it sets the retire order (``contract.RETIRE_ANNOTATION``) and the
shards delete their old versions beyond ``keepOldVersions``.

:func:`plan` decides which annotations to write; ``reconcile`` writes them the way it writes
the fence (read, merge the annotations, replace; never the data). A shard whose state is
unknown (no checkpoint of its current attempt, or one made for other build settings) blocks
both orders, so an order never names a stale digest; an order for a digest no longer wanted
(the spec changed again mid-rebuild) is replaced by the next one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from eio_common import contract
from eio_common.contract import BuildState


@dataclass(frozen=True)
class Orders:
    """The orders on one shard's checkpoint ConfigMap (annotation values; None: unset)."""

    switch: str | None = None
    retire: str | None = None

    @classmethod
    def of(cls, annotations: Mapping[str, str] | None) -> Orders:
        a = annotations or {}
        return cls(a.get(contract.SWITCH_ANNOTATION), a.get(contract.RETIRE_ANNOTATION))


@dataclass(frozen=True)
class Plan:
    """The annotations to write, by shard, and the digest whose switch or retire they order
    (its Event, posted once the writes are done)."""

    writes: dict[int, dict[str, str]]
    switch_ordered: str | None = None
    retire_ordered: str | None = None


def common_digest(builds: Sequence[BuildState | None]) -> str | None:
    """The digest every shard reports, or None (a shard unknown, without one, or another)."""
    digests = {b.digest if b is not None else None for b in builds}
    if len(digests) != 1:
        return None
    return next(iter(digests))


def plan(builds: Sequence[BuildState | None], orders: Sequence[Orders]) -> Plan:
    """The orders to write, from every shard's build state (index = shard; None: unknown) and
    the orders already on its ConfigMap. Switch D where it is missing when every shard reports
    digest D, at least one still fills it and every one that does is ready (the others already
    switched to D on an earlier order); retire D where it is missing once every shard reports
    D active and every ConfigMap carries the switch order D."""
    digest = common_digest(builds) if len(builds) > 1 else None
    if digest is None or len(orders) != len(builds):
        return Plan({})
    states = [b for b in builds if b is not None]
    filling = [b for b in states if b.target is not None]
    if filling:
        if any(b.ready_at is None for b in filling):
            return Plan({})
        writes = {i: {contract.SWITCH_ANNOTATION: digest}
                  for i, o in enumerate(orders) if o.switch != digest}  # fmt: skip
        return Plan(writes, switch_ordered=digest if writes else None)
    if any(o.switch != digest for o in orders):
        return Plan({})  # no rebuild of several shards switched to it: nothing to retire
    writes = {i: {contract.RETIRE_ANNOTATION: digest}
              for i, o in enumerate(orders) if o.retire != digest}  # fmt: skip
    return Plan(writes, retire_ordered=digest if writes else None)


def after(orders: Sequence[Orders], planned: Plan) -> list[Orders]:
    """The orders on the ConfigMaps once ``planned`` is written."""
    out = []
    for i, o in enumerate(orders):
        w = planned.writes.get(i, {})
        out.append(
            Orders(
                w.get(contract.SWITCH_ANNOTATION, o.switch),
                w.get(contract.RETIRE_ANNOTATION, o.retire),
            )
        )
    return out


def readiness_text(builds: Sequence[BuildState | None], orders: Sequence[Orders]) -> str | None:
    """``ready 1/2 shards (shard 0 since 2026-11-21T10:00:00Z); waiting for shard 1 (filling
    convs--v1)``: where a several-shard rebuild stands (None when none is under way)."""
    if len(builds) < 2 or not any(b is not None and b.target for b in builds):
        return None
    digest = common_digest([b for b in builds if b is not None])  # of the shards known
    ready, waiting = [], []
    for i, b in enumerate(builds):
        if b is not None and b.target is None and digest is not None:
            ready.append(f"shard {i} switched")  # on the order, before the others
        elif b is not None and b.target is not None and b.ready_at is not None and digest:
            ready.append(f"shard {i} since {_iso(b.ready_at)}")
        else:
            waiting.append(f"shard {i} ({_shard_text(b, digest)})")
    text = f"ready {len(ready)}/{len(builds)} shards" + (f" ({', '.join(ready)})" if ready else "")
    if waiting:
        return f"{text}; waiting for {', '.join(waiting)}"
    if digest is not None and all(o.switch == digest for o in orders):
        return f"{text}; switch ordered"
    return f"{text}; ordering the switch"


def _shard_text(b: BuildState | None, digest: str | None) -> str:
    if b is None:
        return "no checkpoint of its current attempt yet"
    if b.target is None:
        return f"reads {b.active}, not filling a new version yet"
    if digest is None:
        return f"filling {b.target} for build {b.digest or 'unknown'}; the shards' builds differ"
    return f"filling {b.target}"


def _iso(t: datetime) -> str:
    t = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
