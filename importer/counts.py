"""Counting, once: every count feeds the checkpoint, this run's report and the metrics together.

Three audiences see the importer's counts: the checkpoint's ``counters`` (all runs together,
only what the store acknowledged *and* the file states cover), this run's report
(``--report`` and the summary) and the Prometheus metrics. Each event is counted here by one
call that updates whichever of the three it concerns, so a new count, or a change to what one
of them means, touches this module only. No I/O: the metrics are in-memory counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eio_common.contract import Counters
from importer.metrics import Metrics


@dataclass
class RunStats:
    """What this run did (not earlier runs): the ``--report`` file and the summary."""

    files_done: int = 0
    records: int = 0
    chunks_embedded: int = 0
    points_upserted: int = 0
    points_deleted: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    changes: dict[str, int] = field(default_factory=dict)
    elapsed_seconds: float = 0.0
    store_open_seconds: float = 0.0  # opening the store and loading the file states
    start_memory_bytes: int = 0  # measured memory once the store is open, before any work
    peak_memory_bytes: int = 0
    exit_reason: str = ""


def _add(d: dict[str, int], k: str, v: int) -> None:
    d[k] = d.get(k, 0) + v


class Counts:
    """The counts of the checkpoint (``counters``), the report (``run``) and the metrics."""

    def __init__(self, counters: Counters, m: Metrics) -> None:
        self.counters = counters  # the checkpoint's, all runs together
        self.run = RunStats()
        self.m = m

    def listed(self, files: int) -> None:
        """A scan listed ``files`` files in this shard."""
        self.m.files_total.set(files)

    def records(self, n: int) -> None:
        """Records read, counted when the ledger commits them."""
        self.counters.records += n
        self.run.records += n
        self.m.records.inc(n)

    def skipped(self, by_reason: dict[str, int]) -> None:
        """Skipped items by reason."""
        for k, v in by_reason.items():
            _add(self.counters.skipped, k, v)
            _add(self.run.skipped, k, v)
            self.m.skipped.labels(k).inc(v)

    def upserted(self, n: int) -> None:
        """The store acknowledged ``n`` new points (this run's report and the metrics)."""
        self.run.chunks_embedded += n
        self.run.points_upserted += n
        self.m.chunks.inc(n)
        self.m.points.inc(n)

    def committed_chunk(self, embedded: bool) -> None:
        """A chunk the file states now cover (the checkpoint counts only those)."""
        self.counters.chunks += embedded
        self.counters.points += embedded

    def change(self, kind: str, deleted: int = 0) -> None:
        """A change found in the source (new, appended, ...), with the stale points it cost."""
        self.counters.deleted += deleted
        self.run.points_deleted += deleted
        if deleted:
            self.m.points_deleted.inc(deleted)
        self.m.changes.labels(kind).inc()
        _add(self.run.changes, kind, 1)

    def file_done(self) -> None:
        """A file (or a change to one) finished."""
        self.counters.files += 1
        self.run.files_done += 1
        self.m.files.inc()

    def memory(self, current: int) -> None:
        self.run.peak_memory_bytes = max(self.run.peak_memory_bytes, current)
        self.m.memory.set(current)
