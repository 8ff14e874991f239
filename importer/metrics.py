"""Prometheus metrics (prefix ``embedding_importer_``), served on ``--metrics-port``."""

from __future__ import annotations

from functools import cache

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

P = "embedding_importer_"
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.files = Counter(P + "files", "files finished (done or skipped)", registry=r)
        self.records = Counter(P + "records", "records read", registry=r)
        self.chunks = Counter(P + "chunks", "chunks embedded", registry=r)
        self.points = Counter(P + "points", "points acknowledged by Qdrant", registry=r)
        self.skipped = Counter(P + "skipped", "skipped items", ["reason"], registry=r)
        self.embed_seconds = Histogram(
            P + "embed_seconds",
            "latency of one embedding batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upsert_seconds = Histogram(
            P + "upsert_seconds",
            "latency of one Qdrant upsert (wait=True)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.memory = Gauge(P + "memory_bytes", "memory as measured for the threshold", registry=r)
        self.memory_threshold = Gauge(
            P + "memory_threshold_bytes", "memory threshold (0 = off)", registry=r
        )
        self.checkpoint_writes = Counter(P + "checkpoint_writes", "checkpoint writes", registry=r)
        self.files_total = Gauge(P + "shard_files", "files in this shard", registry=r)
        self.files_done = Gauge(P + "shard_files_done", "files done in this shard", registry=r)
        self.points_deleted = Counter(
            P + "points_deleted",
            "stale points deleted (truncated, rewritten, deleted files)",
            registry=r,
        )
        self.changes = Counter(
            P + "source_changes", "changes found in the source, by kind", ["kind"], registry=r
        )
        self.lag_files = Gauge(
            P + "lag_files", "files new or changed, not yet imported", registry=r
        )
        self.lag_bytes = Gauge(P + "lag_bytes", "bytes of changes not yet imported", registry=r)
        self.lag_seconds = Gauge(
            P + "lag_seconds", "age of the oldest change not yet imported", registry=r
        )
        self.synced = Gauge(P + "synced", "1 when every change seen is imported", registry=r)
        self.qdrant_waits = Counter(
            P + "qdrant_retries", "Qdrant calls retried after an error", registry=r
        )


@cache
def metrics() -> Metrics:
    return Metrics(REGISTRY)


def serve(port: int) -> bool:
    """Serve /metrics on ``port``; a port already taken is a warning, never a failed import.

    (Pods that share a network namespace, or two standalone runs, may ask for the same port:
    losing the metrics endpoint must not cost the import.)
    """
    import logging

    from prometheus_client import start_http_server

    try:
        start_http_server(port)
    except OSError as e:
        logging.getLogger(__name__).warning("metrics disabled: cannot listen on :%d (%s)", port, e)
        return False
    return True
