"""The checkpointer: when to write, and the order of the writes that make progress durable.

Order of one write: the acknowledged points are made durable (``sink.sync``), then the
checkpoint (a small summary) is saved, then the file states changed since the last write.
In this order the checkpoint's counters never miss work that was done: a kill between the two
writes only makes a restart redo (and count) the chunks since the last states.

Writes happen every ``checkpoint_interval`` seconds, and at most once a second when files
finished; while the store is unreachable a heartbeat-only write (no flush, no states) says why
there is no progress. ``start_checkpoint`` makes a run's checkpoint from the previous one.

Fencing (``guard``): before each batch of point writes or deletes the store's fence is
checked, at most ``FENCE_MAX_AGE`` seconds old; the checkpoint save itself checks it in the
same compare-and-swap as its write, and the file states are written only after a save that
passed; a rebuild's switch of readers to the new version (which also deletes old versions)
checks it right before, whatever its age. A superseded run raises
``checkpoint_store.Superseded`` and writes nothing more.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

from eio_common.contract import Checkpoint, Heartbeat, point_id
from importer.checkpoint_store import CheckpointStore, Superseded
from importer.counts import Counts
from importer.ledger import Gone, Ledger
from importer.settings import ConfigError, Settings
from importer.sink import Sink

log = logging.getLogger("importer")

FILE_WRITE_MIN_INTERVAL = 1.0  # seconds: file-boundary checkpoints at most this often
FENCE_MAX_AGE = 1.0  # seconds: a point write trusts a fence check at most this old


def start_checkpoint(s: Settings, prev: Checkpoint | None, where: str) -> Checkpoint:
    """This run's checkpoint: the previous one's counters, a new attempt number."""
    shard, shards = s.shard_pair
    if prev is not None and (prev.shard, prev.shards) != (shard, shards):
        raise ConfigError(
            f"checkpoint {where} belongs to shard {prev.shard}/{prev.shards},"
            f" not {shard}/{shards}: use another checkpoint location"
        )
    cp = prev.model_copy(deep=True) if prev else Checkpoint(shard=shard, shards=shards)
    cp.attempt = s.attempt if s.attempt is not None else (prev.attempt + 1 if prev else 0)
    cp.peak_memory_bytes, cp.last_exit, cp.follow, cp.complete = 0, None, s.follow, False
    return cp


class Checkpointer:
    def __init__(
        self,
        store: CheckpointStore,
        cp: Checkpoint,
        counts: Counts,
        ledger: Ledger,
        sample: Callable[[], int],
        interval: float,
        pod: str | None,
    ) -> None:
        self.store = store
        self.cp = cp
        self.counts = counts
        self.ledger = ledger
        self.sample = sample  # current memory (for the heartbeat)
        self.interval = interval
        self.pod = pod
        self.sink: Sink | None = None  # until the store is open: heartbeats only
        self.waiting: str | None = None  # why no progress right now (heartbeat.waiting)
        self.last_write = 0.0
        self.last_file_write = 0.0
        self.files_since_write = False
        self.last_fence = float("-inf")
        self.stale: list[str] = []  # point IDs to delete once the states without them are saved

    def guard(self, fresh: bool = False) -> None:
        """Before a batch of point writes: raise ``Superseded`` if a newer attempt exists
        (a GET of the checkpoint ConfigMap when the last check is older than FENCE_MAX_AGE;
        ``fresh``: always, before a write no later attempt could undo, e.g. a version switch)."""
        now = time.monotonic()
        if fresh or now - self.last_fence >= FENCE_MAX_AGE:
            self.store.check_fence()
            self.last_fence = now

    def retire(self, stale: list[str], crash_before_delete: bool = False) -> None:
        """Delete the points the ledger made stale once the states that no longer count them
        are saved: a crash between the two writes leaves extra points (``verify`` reports
        them), never an entry ahead of its points. A failed delete is retried next time."""
        self.stale += stale
        if not self.stale:
            return
        assert self.sink is not None
        self.write()
        self.sink.sync()  # the lower states too, against a machine crash
        if crash_before_delete:
            os._exit(137)  # TEST HOOK: stands in for a SIGKILL between the two writes
        self.guard()
        self.sink.delete(self.stale)
        self.stale = []

    def forget(self, gone: list[Gone]) -> None:
        """Files that disappeared: keep their points, or delete them (``on_delete``): the
        manifest entry first, then the points, so the entry is never ahead of its points."""
        assert self.sink is not None
        if gone:
            self.guard()
        for g in gone:
            if not g.delete:
                log.info(
                    "%s was deleted: keeping its %d points (--on-delete keep)", g.sid, g.chunks
                )
                continue
            self.sink.drop_manifest([g.sid])
            self.sink.delete([point_id(g.sid, i) for i in range(g.chunks)])
            log.info("%s was deleted: deleted its %d points", g.sid, g.chunks)

    def attach(self, sink: Sink) -> None:
        """The store is open: the points and file states go there."""
        self.sink = sink

    def files_finished(self) -> None:
        self.files_since_write = True

    def maybe_write(self) -> None:
        now = time.monotonic()
        file_due = self.files_since_write and now - self.last_file_write >= FILE_WRITE_MIN_INTERVAL
        if file_due or now - self.last_write >= self.interval:
            self.write()

    def on_store_wait(self, why: str | None) -> None:
        """While the store is unreachable or held: say why in the heartbeat."""
        self.waiting = why
        if why is None:
            return  # recovered: the next checkpoint write clears heartbeat.waiting
        self.counts.m.qdrant_waits.inc()
        if time.monotonic() - self.last_write >= 1.0:
            try:
                self.write(heartbeat_only=True)  # the store is busy failing: no flush here
            except Superseded:
                raise
            except Exception as e:
                log.warning("heartbeat write failed while waiting for the store: %s", e)

    def write(self, heartbeat_only: bool = False) -> None:
        """Points durable, then the checkpoint, then the file states (see the module doc)."""
        cur = self.sample()
        if self.sink is not None and not heartbeat_only:
            self.sink.sync()
        cp = self._summary(cur)
        self.cp = self.store.save(cp)  # checks the fence in the same compare-and-swap
        self.last_fence = time.monotonic()
        self.counts.counters = self.cp.counters  # a merged save may have raised them
        if self.sink is not None and not heartbeat_only:
            dirty = self.ledger.take_dirty()
            if dirty:
                self.sink.save_manifest(dirty)
        self._publish()
        now = time.monotonic()
        self.last_write = now
        if self.files_since_write:
            self.last_file_write = now
            self.files_since_write = False

    def _summary(self, memory: int) -> Checkpoint:
        cp = self.cp
        cp.counters = self.counts.counters
        led = self.ledger
        cp.files_total, cp.files_done, cp.lag = led.files_total, led.files_done, led.lag()
        cp.synced, cp.last_sync = led.synced, led.last_sync
        cp.peak_memory_bytes = max(cp.peak_memory_bytes, self.counts.run.peak_memory_bytes)
        cp.heartbeat = Heartbeat(
            time=datetime.now(UTC), memory_bytes=memory, pod=self.pod, waiting=self.waiting
        )
        return cp

    def _publish(self) -> None:
        m, cp = self.counts.m, self.cp
        lag = cp.lag
        m.files_total.set(cp.files_total)
        m.files_done.set(cp.files_done)
        m.lag_files.set(lag.files)
        m.lag_bytes.set(lag.bytes)
        age = (datetime.now(UTC) - lag.oldest).total_seconds() if lag.oldest else 0.0
        m.lag_seconds.set(max(0.0, age))
        m.synced.set(1 if cp.synced else 0)
        m.checkpoint_writes.inc()
