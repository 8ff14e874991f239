"""Checkpoint stores: ``file:PATH`` (atomic temp + rename) and ``configmap:NAMESPACE/NAME``.

The ConfigMap store reads and replaces the ConfigMap the operator pre-creates (owned by the
``EmbeddingImport``), with the ``resourceVersion`` it read (optimistic concurrency). On a 409
Conflict it re-reads and merges, so the stored checkpoint never goes backwards. If the
ConfigMap does not exist (standalone use against a cluster), it is created without owner.

Fencing: the operator sets the annotation ``contract.FENCE_ANNOTATION`` to the shard's current
attempt before it creates that attempt's pod. Every read here checks it against this run's
attempt, and the write is a replace with the resourceVersion of the read that passed the
check: an operator bump in between makes the replace a 409, the re-read sees the new fence,
and the save raises :class:`Superseded` instead of writing. A file checkpoint has no fence.

Orders (``--switch-on-order``, a rebuild with several shards): ``orders()`` reads the switch and
retire orders of the coordinated switch (``contract.SWITCH_ANNOTATION``/``RETIRE_ANNOTATION``):
on a ConfigMap its annotations, from the last read of it when that is at most ``ORDERS_MAX_AGE``
seconds old (the fence checks read it anyway); beside a file checkpoint the JSON file
``<checkpoint>.orders.json`` (``{"switch": DIGEST, "retire": DIGEST}``), which a person or a
script writes to coordinate shards run by hand (docs/live-sources.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Final, Protocol

from eio_common import kubeapi
from eio_common.contract import (
    CHECKPOINT_KEY,
    RETIRE_ANNOTATION,
    SWITCH_ANNOTATION,
    Checkpoint,
    fence_of,
    superseded_by,
)
from eio_common.retry import retry
from importer.settings import ConfigError

log = logging.getLogger(__name__)
ORDERS_MAX_AGE: Final = 1.0  # seconds: a ConfigMap read this recent answers ``orders()``
ORDERS_SUFFIX: Final = ".orders.json"  # beside a file checkpoint


@dataclass(frozen=True)
class Orders:
    """The operator's orders of a coordinated switch: build digests (None: no order)."""

    switch: str | None = None
    retire: str | None = None


def orders_of(raw: dict[str, Any] | None, switch: str, retire: str) -> Orders:
    """The orders in ``raw`` (annotations, or the orders file) under the keys given; a value
    that is not a non-empty string is no order."""

    def one(key: str) -> str | None:
        value = (raw or {}).get(key)
        return value.strip() if isinstance(value, str) and value.strip() else None

    return Orders(one(switch), one(retire))


class Superseded(Exception):
    """A newer attempt of this shard exists: this run must stop without writing."""

    def __init__(self, attempt: int, newer: int) -> None:
        super().__init__(f"attempt {attempt} superseded by attempt {newer}")
        self.attempt = attempt
        self.newer = newer


class Revoked(Superseded):
    """The API server refuses the credentials this run has used (401 after they worked): a pod's
    service-account token is bound to the pod, so the pod was deleted (force-deleted on a lost
    node) and a newer attempt may be running. Stop without writing, like ``Superseded``."""

    def __init__(self, attempt: int) -> None:
        Exception.__init__(
            self,
            f"attempt {attempt}: the API server revoked this pod's credentials "
            "(401 Unauthorized: the pod was deleted)",
        )
        self.attempt = attempt
        self.newer = attempt + 1


class CheckpointStore(Protocol):
    description: str

    def load(self) -> Checkpoint | None: ...

    def save(self, cp: Checkpoint) -> Checkpoint: ...

    def check_fence(self) -> None:
        """Raise :class:`Superseded` if a newer attempt of the shard exists."""

    def orders(self) -> Orders:
        """The switch and retire orders of a coordinated switch (module doc)."""


def merge(ours: Checkpoint, theirs: Checkpoint) -> Checkpoint:
    """Combine two checkpoints of the same shard so that neither's counts are lost.

    Counters, the attempt and the peak take the maximum, completion sticks; the rest (lag,
    heartbeat) is ours,
    the writer's, which is the newer view. Per-file progress is not here (it is in the
    manifest), so nothing else can go backwards.
    """
    if (ours.shard, ours.shards) != (theirs.shard, theirs.shards):
        return ours  # another shard's checkpoint: the newer writer's view wins
    out = ours.model_copy(deep=True)
    a, b = out.counters, theirs.counters
    a.files, a.records = max(a.files, b.files), max(a.records, b.records)
    a.chunks, a.points = max(a.chunks, b.chunks), max(a.points, b.points)
    a.deleted = max(a.deleted, b.deleted)
    for k, v in b.skipped.items():
        a.skipped[k] = max(a.skipped.get(k, 0), v)
    out.attempt = max(ours.attempt, theirs.attempt)
    out.peak_memory_bytes = max(ours.peak_memory_bytes, theirs.peak_memory_bytes)
    out.complete = ours.complete or theirs.complete  # a stale writer cannot undo completion
    return out


def parse(text: str, where: str) -> Checkpoint | None:
    """A checkpoint from JSON; None (with a warning) for a version-1 checkpoint, whose
    positions in a file list mean nothing now: the shard starts over, and since point IDs are
    deterministic nothing is duplicated."""
    data = json.loads(text)
    if isinstance(data, dict) and data.get("version", 1) < 2:
        log.warning("%s holds a version 1 checkpoint: starting this shard over", where)
        return None
    return Checkpoint.model_validate(data)


class FileStore:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.description = f"file:{self.path}"

    def load(self) -> Checkpoint | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ConfigError(f"cannot read checkpoint {self.path}: {e}") from None
        try:
            return parse(text, self.description)
        except ValueError as e:
            raise ConfigError(
                f"checkpoint {self.path} is not a valid checkpoint ({str(e).splitlines()[0]}); "
                "delete it to start over"
            ) from None

    def save(self, cp: Checkpoint) -> Checkpoint:
        d = os.path.dirname(self.path) or "."
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", dir=d)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(cp.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return cp

    def check_fence(self) -> None:
        """A file checkpoint (outside the cluster) has no fence: one writer by construction."""

    def orders(self) -> Orders:
        """From ``<checkpoint>.orders.json``; a missing or unreadable file: no orders (a
        half-written one is read again at the next poll)."""
        try:
            with open(self.path + ORDERS_SUFFIX, encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, ValueError):
            return Orders()
        return orders_of(raw if isinstance(raw, dict) else None, "switch", "retire")


class ConfigMapStore:
    """Checkpoint in a ConfigMap (data key ``checkpoint.json``), fenced by ``attempt``."""

    def __init__(self, namespace: str, name: str, attempt: int | None = None) -> None:
        from kubernetes import client

        try:
            api_client = kubeapi.api_client()
        except Exception as e:  # no config, or an unreadable one: say so, not a traceback
            raise ConfigError(
                f"checkpoint configmap:{namespace}/{name} needs a Kubernetes API: no "
                f"in-cluster config and no usable kubeconfig ({e})"
            ) from None
        self.api: Any = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.description = f"configmap:{namespace}/{name}"
        self.attempt = attempt
        self._rv: str | None = None
        self._exists = False
        self._annotations: dict[str, str] = {}
        self._read_at = float("-inf")  # when the annotations above were read

    def _read(self) -> tuple[Any, Checkpoint | None]:
        from kubernetes.client.exceptions import ApiException

        try:
            cm = self.api.read_namespaced_config_map(self.name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return None, None
            if e.status == 401 and self.attempt is not None and self._read_at > float("-inf"):
                raise Revoked(self.attempt) from None
            raise
        self._annotations = dict(cm.metadata.annotations or {})
        self._read_at = time.monotonic()
        self._fence(cm)
        text = (cm.data or {}).get(CHECKPOINT_KEY)
        cp = None
        if text:
            try:
                cp = parse(text, self.description)
            except ValueError:
                log.warning("ConfigMap %s holds an invalid checkpoint; ignoring it", self.name)
        return cm, cp

    def _fence(self, cm: Any) -> None:
        """Raise :class:`Superseded` if the ConfigMap's fence is above this run's attempt."""
        newer = superseded_by(fence_of(cm.metadata.annotations), self.attempt)
        if newer is not None:
            assert self.attempt is not None
            raise Superseded(self.attempt, newer)

    def check_fence(self) -> None:
        """One GET of the ConfigMap (retried through an API outage like every read)."""
        _retry(self._read, f"read {self.description}")

    def orders(self) -> Orders:
        """From the annotations of the last read of the ConfigMap (a fence check, a load, a
        save), read again when that is older than ``ORDERS_MAX_AGE``."""
        if time.monotonic() - self._read_at > ORDERS_MAX_AGE:
            self.check_fence()
        return orders_of(self._annotations, SWITCH_ANNOTATION, RETIRE_ANNOTATION)

    def load(self) -> Checkpoint | None:
        cm, cp = _retry(self._read, f"read {self.description}")
        assert cp is None or isinstance(cp, Checkpoint)
        self._exists = cm is not None
        self._rv = cm.metadata.resource_version if cm is not None else None
        return cp

    def save(self, cp: Checkpoint) -> Checkpoint:
        out = _retry(lambda: self._save(cp), f"write {self.description}")
        assert isinstance(out, Checkpoint)
        return out

    def _save(self, cp: Checkpoint) -> Checkpoint:
        """One read-merge-write; a 409 (someone wrote in between, or the operator raised the
        fence) is retried by ``_retry``, which reads (checking the fence) and merges again."""
        from kubernetes import client

        cm, current = self._read()
        if cm is None:
            body = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                data={CHECKPOINT_KEY: cp.to_json()},
            )
            created = self.api.create_namespaced_config_map(self.namespace, body)
            self._rv = created.metadata.resource_version
            return cp
        if current is not None and _behind(cp, current):
            cp = merge(cp, current)
        cm.data = dict(cm.data or {})
        cm.data[CHECKPOINT_KEY] = cp.to_json()
        out = self.api.replace_namespaced_config_map(self.name, self.namespace, cm)
        self._rv = out.metadata.resource_version
        return cp


def _behind(ours: Checkpoint, theirs: Checkpoint) -> bool:
    """True if ``theirs`` holds counts that ``ours`` lacks (any counter, not the order of
    ``work_mark``: two writers may each be ahead in another counter)."""
    a, b = ours.counters, theirs.counters
    return (
        any(
            getattr(b, f) > getattr(a, f)
            for f in ("files", "records", "chunks", "points", "deleted")
        )
        or any(v > a.skipped.get(k, 0) for k, v in b.skipped.items())
        or theirs.attempt > ours.attempt
        or theirs.peak_memory_bytes > ours.peak_memory_bytes
        or (theirs.complete and not ours.complete)
    )


def _retryable(e: Exception) -> bool:
    """An outage of the API server (``kubeapi.transient``), or a 409 Conflict: another writer
    changed the ConfigMap in between (or created it first); reading again and merging
    resolves it."""
    from kubernetes.client.exceptions import ApiException

    return kubeapi.transient(e) or (isinstance(e, ApiException) and e.status == 409)


def _retry(fn: Any, what: str) -> Any:
    return retry(
        fn,
        _retryable,
        lambda e: f"cannot {what} ({type(e).__name__}{_status(e)})",
        attempts=12,
        max_delay=10,
    )


def _status(e: Exception) -> str:
    status = getattr(e, "status", None)
    return f" {status}" if status else ""


def open_store(location: str, attempt: int | None = None) -> CheckpointStore:
    """The store at ``location``; a ConfigMap store is fenced by ``attempt`` (None: never)."""
    if location.startswith("file:"):
        return FileStore(location[len("file:") :])
    if location.startswith("configmap:"):
        ns, _, name = location[len("configmap:") :].partition("/")
        return ConfigMapStore(ns, name, attempt)
    raise ConfigError(f"bad checkpoint location {location!r}")
