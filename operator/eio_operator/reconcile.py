"""Level-based reconcile of one EmbeddingImport: read the world, decide per shard, write status,
then act.

Every trigger (create, resume, update, a pod event, the resync loop) calls
``reconcile(ctx, namespace, name)``. It reads the import fresh from the API (never a cached
body), its pods and checkpoint ConfigMaps, runs the pure decision for every shard, writes the
status *before* acting (with the resourceVersion it read, so a concurrent write is a conflict,
not a lost update), and then creates/deletes pods and posts events. A crash between the status
write and the actions is repaired by the next reconcile: a pod recorded but never observed is
created again, a pod accounted for but still live is deleted again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from eio_common import contract
from eio_common.contract import Checkpoint
from eio_common.retry import retry
from eio_operator import builders, metrics, nodes, switch
from eio_operator.builders import Owner
from eio_operator.decision import Action, Decision, decide
from eio_operator.kube import ApiError, Kube, Manifest
from eio_operator.models import (
    EmbeddingImportSpec,
    EmbeddingImportStatus,
    ImportPhase,
    InvalidSpecError,
    ShardPhase,
    parse_spec,
    parse_status,
)
from eio_operator.observe import ObservedPod, observe_pod
from eio_operator.reasons import ConditionReason, EventReason, ShardReason
from eio_operator.settings import OperatorSettings
from eio_operator.status import (
    DEGRADED,
    VERIFIED,
    build_events,
    invalid_spec_status,
    summarize,
)

log = logging.getLogger(__name__)


class EventSink(Protocol):
    def __call__(
        self, body: Manifest, type: str, reason: ShardReason | EventReason, message: str
    ) -> None: ...


@dataclass
class Context:
    """What every handler needs; one per operator process, kept in kopf's memo."""

    settings: OperatorSettings
    kube: Kube
    # Posted through the API directly (RestKube.post_event), not kopf.event: kopf's poster
    # exists only inside its per-object handlers, and the resync loop runs outside them.
    events: EventSink
    gauges: metrics.ImportGauges = field(default_factory=metrics.ImportGauges)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Everything below is per import and dropped by ``forget`` once the import is gone: a
    # long-running operator sees thousands of imports come and go.
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    # Problems already logged and posted (unreadable checkpoints and statuses), by import and
    # by what was unreadable (a ConfigMap's name, or "status"): once each.
    _reported: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def first_report(self, namespace: str, name: str, what: str, problem: str | None) -> bool:
        """Remember ``problem`` of ``what``; True when it is new (log and post it once)."""
        with self._guard:
            reported = self._reported.setdefault((namespace, name), {})
            if problem is None:
                reported.pop(what, None)
                if not reported:
                    del self._reported[(namespace, name)]
                return False
            new = reported.get(what) != problem
            reported[what] = problem
            return new

    def lock(self, namespace: str, name: str) -> threading.Lock:
        """One reconcile at a time per import (timer, pod events and change handlers overlap)."""
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept about an import that is gone (lock, reported problems, gauges)."""
        with self._guard:
            self._locks.pop((namespace, name), None)
            self._reported.pop((namespace, name), None)
        self.gauges.forget((namespace, name))

    def remembered(self) -> int:
        """How many imports some per-import state is kept for (zero once all are gone)."""
        with self._guard:
            keys = set(self._locks) | set(self._reported)
        return len(keys | self.gauges.keys())


@dataclass(frozen=True)
class Result:
    phase: ImportPhase | None  # None: the import is gone
    decisions: tuple[Decision, ...] = ()
    requeue_after: float | None = None
    status_written: bool = False


def reconcile(ctx: Context, namespace: str, name: str) -> Result:
    """Reconcile one import. Raises InvalidSpecError (after reporting it) or ApiError."""
    with ctx.lock(namespace, name), metrics.RECONCILE_TIME.time():
        try:
            result = _reconcile_with_retry(ctx, namespace, name)
        except InvalidSpecError:
            metrics.RECONCILE_TOTAL.labels(result="invalid").inc()
            raise
        except Exception:
            metrics.RECONCILE_TOTAL.labels(result="error").inc()
            raise
        metrics.RECONCILE_TOTAL.labels(result="success").inc()
        return result


CONFLICT_RETRIES = 3


def _reconcile_with_retry(ctx: Context, namespace: str, name: str) -> Result:
    """Retry at once when the status write conflicts (kopf's own annotation patches bump the
    resourceVersion): nothing was acted on yet, so reading again and redoing is safe."""
    return retry(
        lambda: _reconcile(ctx, namespace, name),
        lambda e: isinstance(e, ApiError) and e.status == 409,
        lambda e: f"{namespace}/{name}: status write conflicted ({e}); reading again",
        attempts=CONFLICT_RETRIES,
        delay=0,
        level=logging.DEBUG,
    )


def owned_by(obj: Manifest, uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid for r in refs)


def read_checkpoint(cm: Manifest | None) -> tuple[Checkpoint | None, str | None]:
    """The checkpoint in a ConfigMap, or None and why it cannot be read. Never raises: a
    version 1 checkpoint (before contract v2), a truncated write or a hand edit must not stop
    the reconcile; the shard then counts as having no checkpoint (no progress seen) and the
    importer rewrites it (a v2 importer starts a v1 shard over; point IDs are deterministic)."""
    if cm is None:
        return None, None
    text = (cm.get("data") or {}).get(contract.CHECKPOINT_KEY)
    if not text:
        return None, None
    try:
        return Checkpoint.from_json(text), None
    except (ValueError, TypeError) as exc:  # JSON and pydantic errors are ValueErrors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"checkpoint {contract.CHECKPOINT_KEY} is unreadable: {first[:300]}"


def _reconcile(ctx: Context, namespace: str, name: str) -> Result:
    key = (namespace, name)
    body = ctx.kube.get_import(namespace, name)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        ctx.forget(namespace, name)
        return Result(phase=None)
    meta = body["metadata"]
    generation = int(meta.get("generation") or 0)
    now = ctx.clock().replace(microsecond=0)
    previous, status_problem = _previous_status(ctx, body)
    spec = _spec_or_report(ctx, body, previous, now)
    owner = Owner.from_body(body)
    read = _checkpoints(ctx, body, owner, spec.shards)
    checkpoints = read.checkpoints
    raw = [p for p in ctx.kube.list_pods(namespace, builders.selector(name))
           if owned_by(p, owner.uid)]  # fmt: skip
    pods = [observed for p in raw if (observed := observe_pod(p)) is not None]
    decisions = _decide_all(spec, pods, checkpoints, previous, now, generation, name, read.fences)
    orders, switch_text = _switch_plan(spec, decisions, read)
    status = summarize(
        spec=spec, generation=generation, previous=previous, decisions=decisions,
        checkpoints=checkpoints, now=now, checkpoint_problems=read.problems,
        status_problem=status_problem, switch_text=switch_text,
        read_service=(
            contract.read_service_name(name) if spec.qdrant.embedded is not None else None
        ),
    )  # fmt: skip
    lost = _node_losses(ctx, body, spec, raw, now)
    status = nodes.with_condition(status, lost, now, generation)
    written = status.to_wire() != previous.to_wire()
    if written:  # status first: the next reconcile must know what this one decided
        ctx.kube.patch_import_status(namespace, name, status.to_wire(), meta.get("resourceVersion"))
    _act(ctx, body, owner, spec, decisions, read.ready, read.fences)
    _write_orders(ctx, body, owner, orders)
    _verify_news(ctx, body, previous, status)
    for reason, message in build_events(previous.build, status.build):
        ctx.events(body, "Normal", reason, message)
    _act_on_lost_nodes(ctx, body, raw, lost, previous)
    ctx.gauges.update(
        key,
        active=status.phase not in (ImportPhase.SUCCEEDED, ImportPhase.FAILED),
        pod_phases=[s.phase.value for s in status.shards if s.pod],
    )
    ctx.gauges.verified(key, status.verify)
    waits = [d.requeue_after for d in decisions if d.requeue_after is not None]
    if (node_wait := nodes.requeue_after(lost, spec.memory_policy.node_lost_seconds)) is not None:
        waits.append(node_wait)
    return Result(
        phase=status.phase,
        decisions=tuple(decisions),
        requeue_after=min(waits) if waits else None,
        status_written=written,
    )


def _verify_news(
    ctx: Context, body: Manifest, previous: EmbeddingImportStatus, status: EmbeddingImportStatus
) -> None:
    """A Warning event when the Verified condition turns False (once per turn)."""
    old, new = previous.condition(VERIFIED), status.condition(VERIFIED)
    if new is not None and new.status == "False" and (old is None or old.status != "False"):
        ctx.events(body, "Warning", EventReason.VERIFY_FOUND_DAMAGE, new.message)


def _node_losses(
    ctx: Context, body: Manifest, spec: EmbeddingImportSpec, pods: list[Manifest], now: datetime
) -> list[nodes.NodeLoss]:
    """Our live pods on lost nodes (:mod:`.nodes`). A Node that cannot be read (no RBAC for
    nodes, API trouble) gives no verdict: logged and posted once, the reconcile goes on."""
    meta = body["metadata"]
    names = {n for p in pods if (n := (p.get("spec") or {}).get("nodeName"))}
    read: dict[str, Manifest | None] = {}
    problem = None
    for node in sorted(names):
        try:
            read[node] = ctx.kube.get_node(node)
        except ApiError as exc:
            read[node], problem = (
                None,
                f"cannot read node {node} ({exc}): pods on lost nodes "
                "are not detected (the operator needs get on nodes)",
            )
    if ctx.first_report(meta["namespace"], meta["name"], "nodes", problem):
        log.warning("%s/%s: %s", meta["namespace"], meta["name"], problem)
    return nodes.losses(spec, pods, read, now)


def _act_on_lost_nodes(
    ctx: Context,
    body: Manifest,
    pods: list[Manifest],
    lost: list[nodes.NodeLoss],
    previous: EmbeddingImportStatus,
) -> None:
    """Force-delete what :func:`nodes.judge` says to; one Warning event per new verdict
    (what the previous NodeLost condition did not say yet)."""
    old = previous.condition(nodes.NODE_LOST)
    said = old.message if old is not None and old.status == "True" else ""
    uids = {p["metadata"]["name"]: p["metadata"].get("uid", "") for p in pods}
    namespace = body["metadata"]["namespace"]
    for loss in lost:
        if loss.verdict == nodes.Verdict.WITHIN_GRACE:
            continue
        if loss.message not in said:
            ctx.events(body, "Warning", EventReason.NODE_LOST, loss.message)
        if loss.verdict == nodes.Verdict.FORCE_DELETE:
            log.info("%s/%s: %s", namespace, body["metadata"]["name"], loss.message)
            ctx.kube.force_delete_pod(namespace, loss.pod, uids.get(loss.pod, ""))


def _previous_status(ctx: Context, body: Manifest) -> tuple[EmbeddingImportStatus, str | None]:
    """The status as last written, and what of it could not be read (logged and posted once:
    the shards dropped start afresh, so their retry budget was reset)."""
    meta = body["metadata"]
    previous, problem = parse_status(body.get("status"))
    if ctx.first_report(meta["namespace"], meta["name"], "status", problem):
        log.warning("%s/%s: %s", meta["namespace"], meta["name"], problem)
        ctx.events(
            body,
            "Warning",
            EventReason.STATUS_UNREADABLE,
            f"{problem}; the shards dropped start afresh, with a fresh retry budget",
        )
    return previous, problem


def _spec_or_report(
    ctx: Context, body: Manifest, previous: EmbeddingImportStatus, now: datetime
) -> EmbeddingImportSpec:
    """The parsed spec; an invalid one is reported (condition, event) and raised."""
    meta = body["metadata"]
    generation = int(meta.get("generation") or 0)
    try:
        spec = parse_spec(body.get("spec"), meta["name"])
        if previous.shards and len(previous.shards) != spec.shards:
            raise InvalidSpecError(
                f"spec.parallelism.shards: changed from {len(previous.shards)} to "
                f"{spec.shards}, but it is immutable (each checkpoint covers its shard's slice "
                "of the file list); set it back or create a new EmbeddingImport"
            )
    except InvalidSpecError as exc:
        _report_invalid(ctx, body, previous, str(exc), now, generation, meta.get("resourceVersion"))
        ctx.gauges.update((meta["namespace"], meta["name"]), active=True, pod_phases=())
        raise
    return spec


@dataclass(frozen=True)
class _CheckpointsRead:
    """What the shards' checkpoint ConfigMaps say, by shard."""

    checkpoints: dict[int, Checkpoint | None]
    problems: dict[int, str]  # why a checkpoint could not be read
    ready: dict[int, bool]  # the ConfigMap is ours (a pod may start)
    fences: dict[int, int | None]  # contract.FENCE_ANNOTATION: importers must not be below
    orders: dict[int, switch.Orders]  # a several-shard rebuild's switch and retire orders


def _checkpoints(ctx: Context, body: Manifest, owner: Owner, shards: int) -> _CheckpointsRead:
    """Every shard's checkpoint (pre-creating missing ConfigMaps), the problems of unreadable
    ones (logged and posted once each), whether the shard's ConfigMap is ours, its fence
    (``contract.FENCE_ANNOTATION``: the attempt the importers must not be below) and the
    switch and retire orders on it."""
    namespace, name = owner.namespace, owner.name
    configmaps = {
        cm["metadata"]["name"]: cm
        for cm in ctx.kube.list_configmaps(namespace, builders.selector(name))
        if owned_by(cm, owner.uid)
    }
    checkpoints: dict[int, Checkpoint | None] = {}
    problems: dict[int, str] = {}
    ready: dict[int, bool] = {}
    fences: dict[int, int | None] = {}
    orders: dict[int, switch.Orders] = {}
    for shard in range(shards):
        cm_name = contract.checkpoint_configmap_name(name, shard)
        cm = configmaps.get(cm_name)
        if cm is None:
            # Pre-create it, owned by the import. A 409 means a same-named ConfigMap of an
            # earlier import still exists (garbage collection pending): no pod until it is ours.
            ready[shard] = ctx.kube.create(builders.checkpoint_configmap(owner, shard))
        else:
            ready[shard] = True
        annotations = (cm or {}).get("metadata", {}).get("annotations")
        fences[shard] = contract.fence_of(annotations)
        orders[shard] = switch.Orders.of(annotations)
        checkpoints[shard], problem = read_checkpoint(cm)
        if problem is not None:
            problems[shard] = f"ConfigMap {cm_name}: {problem}"
        if ctx.first_report(namespace, name, cm_name, problem):
            log.warning("%s/%s shard %d: %s", namespace, name, shard, problems[shard])
            ctx.events(
                body,
                "Warning",
                EventReason.CHECKPOINT_UNREADABLE,
                f"shard {shard}: {problems[shard]}",
            )
    return _CheckpointsRead(checkpoints, problems, ready, fences, orders)


def _switch_plan(
    spec: EmbeddingImportSpec, decisions: list[Decision], read: _CheckpointsRead
) -> tuple[switch.Plan, str | None]:
    """A rebuild of several shards (``spec.switch_on_order``): the orders to write and where
    the rebuild stands (the Rebuilding condition's message). A shard's build state counts
    only from a checkpoint of its current attempt made for the spec's build settings, so an
    order never names a stale digest."""
    if not spec.switch_on_order:
        return switch.Plan({}), None
    builds = [
        cp.build if (cp := read.checkpoints.get(d.shard.index)) is not None
        and cp.attempt >= d.shard.attempt and d.shard.build_hash == spec.build_hash else None
        for d in decisions
    ]  # fmt: skip
    before = [read.orders.get(d.shard.index, switch.Orders()) for d in decisions]
    planned = switch.plan(builds, before)
    return planned, switch.readiness_text(builds, switch.after(before, planned))


def _write_orders(ctx: Context, body: Manifest, owner: Owner, planned: switch.Plan) -> None:
    """Write the switch or retire orders on the checkpoint ConfigMaps the way the fence is
    written (read, merge the annotations, replace: never the data nor the fence); an Event
    once the switch is ordered on every shard."""
    for shard, wanted in sorted(planned.writes.items()):
        ctx.kube.annotate_configmap(
            owner.namespace, contract.checkpoint_configmap_name(owner.name, shard), wanted
        )
    if planned.switch_ordered is not None:
        ctx.events(
            body,
            "Normal",
            EventReason.REBUILD_SWITCH_ORDERED,
            f"every shard is ready with build {planned.switch_ordered}: ordered the "
            "switch of searches to the new version",
        )
    if planned.retire_ordered is not None:
        log.info(
            "%s/%s: every shard switched to build %s: ordered the retire of the old versions",
            owner.namespace,
            owner.name,
            planned.retire_ordered,
        )


def _decide_all(
    spec: EmbeddingImportSpec,
    pods: list[ObservedPod],
    checkpoints: dict[int, Checkpoint | None],
    previous: EmbeddingImportStatus,
    now: datetime,
    generation: int,
    name: str,
    fences: dict[int, int | None],
) -> list[Decision]:
    failed = any(
        s.phase == ShardPhase.FAILED and s.failed_generation == generation for s in previous.shards
    )

    def run(import_failed: bool) -> list[Decision]:
        return [
            decide(
                spec,
                i,
                pods,
                checkpoints[i],
                previous.shard(i),
                now,
                generation,
                import_name=name,
                import_failed=import_failed,
                fence=fences.get(i),
            )
            for i in range(spec.shards)
        ]

    decisions = run(failed)
    if not failed and any(d.action == Action.FAIL for d in decisions):
        # A shard failed the import just now: stop the others in the same round.
        again = run(True)
        decisions = [d if d.action == Action.FAIL else again[i] for i, d in enumerate(decisions)]
    return decisions


def _act(
    ctx: Context,
    body: Manifest,
    owner: Owner,
    spec: EmbeddingImportSpec,
    decisions: list[Decision],
    ready: dict[int, bool],
    fences: dict[int, int | None],
) -> None:
    """Apply the decisions: delete, create (fence first), post events, count restarts."""
    errors: list[ApiError] = []
    cluster_ips: dict[int, str] = {}
    if any(d.create for d in decisions):
        if spec.importer.service_account_name is None:
            for manifest in builders.importer_rbac(owner, spec.shards):
                ctx.kube.create(manifest)
        cluster_ips = _read_services(ctx, owner, spec)
        _ensure_budget(ctx, owner, spec)
    for d in decisions:
        shard = d.shard.index
        for pod_name in (*d.delete, *d.prune):
            ctx.kube.delete_pod(owner.namespace, pod_name)
        created = True
        if d.create is not None:
            if not ready.get(shard, False):
                log.info("shard %d: checkpoint ConfigMap not ours yet; pod start deferred", shard)
                created = False
            else:
                try:
                    created = _create_pod(ctx, owner, spec, d, cluster_ips, fences.get(shard))
                except ApiError as exc:
                    created = False
                    errors.append(exc)
                    pod = contract.pod_name(owner.name, shard, d.create.attempt)
                    ctx.events(
                        body,
                        "Warning",
                        EventReason.POD_CREATE_FAILED,
                        f"shard {shard}: cannot create {pod}: {exc}",
                    )
        if d.restart is not None:
            metrics.RESTARTS_TOTAL.labels(reason=d.restart.value).inc()
        for event in d.events:
            if d.action == Action.START and not created:
                continue  # no pod started (yet): the next reconcile tries again
            ctx.events(body, event.type, event.reason, event.message)
    if errors:
        raise errors[0]


def _ensure_budget(ctx: Context, owner: Owner, spec: EmbeddingImportSpec) -> None:
    """The import's PodDisruptionBudget, if the spec asks for one: created with the first pod,
    its spec brought up to date (merge patch) whenever another pod is created."""
    budget = builders.disruption_budget(owner, spec)
    if budget is not None and not ctx.kube.create(budget):
        ctx.kube.patch_budget(owner.namespace, budget["metadata"]["name"], budget["spec"])


def _create_pod(
    ctx: Context,
    owner: Owner,
    spec: EmbeddingImportSpec,
    d: Decision,
    cluster_ips: dict[int, str],
    fence: int | None,
) -> bool:
    """Raise the shard's fence to the new attempt, then create its pod. The fence first: once
    attempt M's pod can run, no older attempt writes (it finds the fence above it and stops,
    exit 79). The fence never goes down. Raises ApiError (no pod without its fence)."""
    assert d.create is not None
    shard, attempt = d.shard.index, d.create.attempt
    if fence is None or fence < attempt:
        ctx.kube.annotate_configmap(
            owner.namespace,
            contract.checkpoint_configmap_name(owner.name, shard),
            {contract.FENCE_ANNOTATION: str(attempt)},
        )
    pod = builders.importer_pod(
        owner,
        spec,
        shard,
        attempt,
        d.create.memory_limit_bytes,
        ctx.settings.default_importer_image,
        builders.read_peers(spec, shard, cluster_ips),
    )
    return ctx.kube.create(pod)


def _read_services(ctx: Context, owner: Owner, spec: EmbeddingImportSpec) -> dict[int, str]:
    """Create the Services to an embedded store's read APIs (if missing) and return each
    shard's cluster IP (its peers' address for a read that covers every shard)."""
    services = builders.read_services(owner, spec)
    for manifest in services:
        ctx.kube.create(manifest)
    if spec.shards == 1 or not services:
        return {}
    ips: dict[int, str] = {}
    for svc in ctx.kube.list_services(owner.namespace, builders.selector(owner.name)):
        shard = (svc["metadata"].get("labels") or {}).get(contract.LABEL_SHARD)
        ip = (svc.get("spec") or {}).get("clusterIP")
        if shard is not None and ip and ip != "None" and owned_by(svc, owner.uid):
            ips[int(shard)] = ip
    return ips


def _report_invalid(
    ctx: Context,
    body: Manifest,
    previous: EmbeddingImportStatus,
    message: str,
    now: datetime,
    generation: int,
    resource_version: Any,
) -> None:
    """Degraded/InvalidSpec condition and one Warning event per generation and message."""
    old = previous.condition(DEGRADED)
    already = (
        old is not None
        and old.reason == ConditionReason.INVALID_SPEC
        and old.message == message
        and old.observed_generation == generation
    )
    status = invalid_spec_status(previous, message, now, generation)
    if status.to_wire() != previous.to_wire():
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        ctx.kube.patch_import_status(ns, name, status.to_wire(), resource_version)
    if not already:
        ctx.events(body, "Warning", EventReason.INVALID_SPEC, message)
