"""kopf handlers, all registered here. Each is a few lines: find the import, reconcile, report.

Triggers of the one level-based reconcile (``eio_operator.reconcile``):

- create / resume / update of an EmbeddingImport: at once; an invalid spec becomes a
  ``kopf.PermanentError`` (after a Degraded/InvalidSpec condition and a Warning event);
- any change of one of its pods (``eio.dev/import`` label): at once, so a pod that exits 75 or
  is OOM-killed is replaced within a second;
- a resync loop (:func:`resync_loop`, every ``EIO_RESYNC_INTERVAL_SECONDS``)
  started at operator start-up: it lets the decision's health check see
  heartbeats (memory over threshold, stalls), backoff expiry and anything a missed watch event
  left behind. It is not a ``kopf.timer``: kopf puts a finalizer on every object that has a
  timer, and then deleting an import (or its namespace) hangs while the operator is down;
  so no timer handler exists either.

No finalizer: pods, checkpoint ConfigMaps and the importer RBAC are owned by the import and
garbage-collected with it, and nothing outside the cluster needs cleaning up. The operator's
own per-import state (lock, metrics, reported problems) is dropped on the import's DELETED
watch event, and by any reconcile that finds the import gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from eio_common import contract
from eio_operator.kube import ApiError
from eio_operator.models import ImportPhase, InvalidSpecError
from eio_operator.reconcile import Context, reconcile
from eio_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

RESOURCE = (contract.API_GROUP, contract.API_VERSION, contract.PLURAL)
ANNOTATION_PREFIX = contract.API_GROUP
FINALIZER = f"{contract.API_GROUP}/finalizer"


def context_of(memo: Any) -> Context:
    ctx = getattr(memo, "eio", None)
    if not isinstance(ctx, Context):
        raise kopf.PermanentError("operator context missing from kopf's memo (see main.py)")
    return ctx


def configure_kopf(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    """kopf's own settings: bookkeeping under eio.dev, watch timeouts, event levels."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    # Re-establish watches regularly and time out a silent connection (API server restarts).
    settings.watching.server_timeout = ours.watch_server_timeout_seconds
    settings.watching.client_timeout = ours.watch_client_timeout_seconds
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 60
    # kopf's own events ("Handler ... succeeded") only from WARNING up; ours are posted by
    # RestKube.post_event.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "embedding-import-operator"
    settings.execution.max_workers = ours.workers
    settings.peering.standalone = True
    # Watching one namespace needs no cluster-wide discovery: without this kopf lists and
    # watches Namespaces and CRDs, which a namespaced Role does not grant (403s and a slow
    # start). The resources are still discovered once through the API's discovery endpoints.
    settings.scanning.disabled = bool(ours.watch_namespace)


def _run(ctx: Context, namespace: str | None, name: str, *, strict: bool) -> None:
    if not namespace:
        return  # EmbeddingImports are namespaced; nothing to do for a cluster-scoped body
    try:
        reconcile(ctx, namespace, name)
    except InvalidSpecError as exc:
        if strict:
            raise kopf.PermanentError(str(exc)) from None
        log.debug("%s/%s: invalid spec (already reported): %s", namespace, name, exc)
    except ApiError as exc:
        if exc.transient:
            raise kopf.TemporaryError(str(exc), delay=2 if exc.status == 409 else 5) from None
        raise


async def on_startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    ctx = context_of(memo)
    configure_kopf(settings, ctx.settings)
    memo.resync_task = asyncio.create_task(
        resync_loop(ctx, ctx.settings.resync_interval_seconds), name="eio-resync"
    )


async def on_cleanup(memo: Any, **_: Any) -> None:
    task = getattr(memo, "resync_task", None)
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def resync_loop(ctx: Context, interval: float) -> None:
    """Every ``interval`` seconds run :func:`resync` for every watched import."""
    namespace = ctx.settings.watch_namespace or None
    while True:
        await asyncio.sleep(interval)
        try:
            items = await asyncio.to_thread(ctx.kube.list_imports, namespace)
        except Exception as exc:  # an API outage must not end the loop
            log.warning("resync: cannot list EmbeddingImports (%s); retrying", exc)
            continue
        for body in items:
            meta = body.get("metadata") or {}
            try:
                await asyncio.to_thread(
                    resync,
                    ctx,
                    meta.get("namespace"),
                    meta.get("name", ""),
                    body.get("status"),
                    meta,
                )
            except Exception as exc:  # one import's trouble must not stop the others
                log.warning("resync %s/%s: %s", meta.get("namespace"), meta.get("name"), exc)


def on_import_change(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """Create, resume (operator start) and update: reconcile now."""
    _run(context_of(memo), namespace, name, strict=True)


def resync(ctx: Context, namespace: str | None, name: str, status: Any, meta: Any) -> None:
    """One resync of one import: health checks, backoff expiry, missed events."""
    phase = (status or {}).get("phase")
    done = phase in (ImportPhase.SUCCEEDED, ImportPhase.FAILED)
    if done and (status or {}).get("observedGeneration") == meta.get("generation"):
        return  # finished and unchanged: nothing can happen until the spec changes
    _run(ctx, namespace, name, strict=False)


def on_import_event(event: Any, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """An import is gone (watch event DELETED): forget what the operator keeps about it.

    Children are garbage-collected through owner references. Not a ``kopf.on.delete``
    handler: without a finalizer kopf sees only the DELETED event and calls no delete handler,
    so the per-import state (lock, gauges, reported problems) stayed for good."""
    if is_deleted(event):
        context_of(memo).forget(namespace or "", name)


def is_deleted(event: Any, **_: Any) -> bool:
    """The watch event says the object is gone (also kopf's filter: no call, no log line, for
    every other event of every import)."""
    return bool(event.get("type") == "DELETED")


def on_pod_event(event: Any, body: Any, namespace: str | None, memo: Any, **_: Any) -> None:
    """A pod of an import changed: reconcile its import at once."""
    if event.get("type") is None:
        return  # initial listing: resume handlers and the timer cover the state at start
    meta = body.get("metadata") or {}
    owner = next(
        (
            r
            for r in meta.get("ownerReferences") or []
            if r.get("kind") == contract.KIND
            and r.get("apiVersion", "").startswith(f"{contract.API_GROUP}/")
        ),
        None,
    )
    if owner is None:
        return
    _run(context_of(memo), namespace, owner["name"], strict=False)


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Register every handler of the operator in ``registry``."""
    # A registry of our own gets none of kopf's default login handlers: log in like kopf does
    # by default (through the kubernetes client: in-cluster service account or kubeconfig).
    kopf.on.login(registry=registry)(kopf.login_via_client)
    kopf.on.startup(registry=registry)(on_startup)
    kopf.on.cleanup(registry=registry)(on_cleanup)
    kopf.on.create(*RESOURCE, registry=registry)(on_import_change)
    kopf.on.resume(*RESOURCE, registry=registry)(on_import_change)
    kopf.on.update(*RESOURCE, registry=registry)(on_import_change)
    kopf.on.event(*RESOURCE, registry=registry, when=is_deleted)(on_import_event)
    kopf.on.event(
        "", "v1", "pods", registry=registry, labels={contract.LABEL_IMPORT: kopf.PRESENT}
    )(on_pod_event)
