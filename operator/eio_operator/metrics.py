"""Prometheus metrics of the operator (names as controller-runtime's where the meaning matches)."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from eio_common.contract import VERIFY_DAMAGE
from eio_operator.models import ImportVerify

RECONCILE_TOTAL = Counter(
    "eio_operator_reconcile_total",
    "Reconciles of EmbeddingImports by result (success, error, invalid).",
    ["result"],
)
RECONCILE_TIME = Histogram(
    "eio_operator_reconcile_time_seconds",
    "Time per reconcile of one EmbeddingImport.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RESTARTS_TOTAL = Counter(
    "eio_operator_restarts_total",
    "Importer pod restarts by cause "
    "(threshold, oomKilled, overThreshold, stalled, evicted, crash).",
    ["reason"],
)
ACTIVE_IMPORTS = Gauge(
    "eio_operator_active_imports",
    "EmbeddingImports neither Succeeded nor Failed.",
)
PODS = Gauge(
    "eio_operator_pods",
    "Importer pods of all imports by shard phase (Pending, Running, Terminating).",
    ["phase"],
)

VERIFY_DAMAGE_POINTS = Gauge(
    "eio_operator_verify_damage",
    "Damage the importers' last verifies found, by import and kind (missing_points, "
    "extra_points, orphan_points, stale_manifest, identity_mismatch), summed over the shards.",
    ["namespace", "import", "kind"],
)
VERIFY_LAST = Gauge(
    "eio_operator_verify_last_timestamp_seconds",
    "When the least recently verified shard of an import was last verified (Unix time).",
    ["namespace", "import"],
)

_PHASES = ("Pending", "Running", "Terminating")


class ImportGauges:
    """Per-import contributions to the gauges, so a reconcile replaces (not adds) its share."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], bool] = {}
        self._pods: dict[tuple[str, str], Tally[str]] = {}

    def update(self, key: tuple[str, str], active: bool, pod_phases: Iterable[str]) -> None:
        with self._lock:
            self._active[key] = active
            self._pods[key] = Tally(p for p in pod_phases if p in _PHASES)
            self._publish()

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._active.pop(key, None)
            self._pods.pop(key, None)
            self._publish()
        self.verified(key, None)

    def verified(self, key: tuple[str, str], v: ImportVerify | None) -> None:
        """An import's verify gauges; none until a verify has run (or after it is gone)."""
        counts = v.counts.model_dump() if v is not None else {}
        for kind in VERIFY_DAMAGE:
            if v is None:
                with contextlib.suppress(KeyError):
                    VERIFY_DAMAGE_POINTS.remove(*key, kind)
            else:
                VERIFY_DAMAGE_POINTS.labels(*key, kind).set(counts[kind])
        if v is not None and v.time is not None:
            VERIFY_LAST.labels(*key).set(v.time.timestamp())
        else:
            with contextlib.suppress(KeyError):
                VERIFY_LAST.remove(*key)

    def keys(self) -> set[tuple[str, str]]:
        with self._lock:
            return set(self._active) | set(self._pods)

    def _publish(self) -> None:
        ACTIVE_IMPORTS.set(sum(self._active.values()))
        total: Tally[str] = Tally()
        for tally in self._pods.values():
            total.update(tally)
        for phase in _PHASES:
            PODS.labels(phase=phase).set(total[phase])
