"""The import loop: scan -> files -> units -> chunks -> batches -> vectors -> store -> state.

Progress is kept per file (``importer.scan``): a byte cursor, a head fingerprint and the number
of chunks, in a manifest beside the points. The checkpoint (ConfigMap or file) is a small summary.

Ordering guarantee: every event of the stream (a chunk, the end of a file) enters a ledger in
stream order. A chunk is *acknowledged* once the store acknowledged its point. File states only
ever advance over the longest acknowledged prefix of the ledger, and they are saved and flushed
before the checkpoint is written, so whatever stops the process (threshold, SIGTERM, SIGKILL,
OOM, crash), a restart resumes at a point from which it reproduces the same chunks, the same
point IDs and the same vectors.

``--follow`` scans again whenever the source changes (``importer.watch``) and never ends by
itself; a one-shot run ends when the scan's work is done.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from eio_common import contract
from eio_common.contract import Checkpoint, Heartbeat, Lag
from eio_common.retry import Stop
from importer.batching import plan_batches
from importer.checkpoint_store import CheckpointStore, open_store
from importer.chunking import Chunk, TokenCounter, chunk_units
from importer.memory import FaultHold, MemorySampler
from importer.metrics import Metrics, metrics, serve
from importer.payload import chunk_payload
from importer.progress import Progress, RunStats, format_summary, write_report
from importer.scan import Job, acked, cursor_after, finish, pos_of, scan
from importer.settings import ConfigError, Settings
from importer.sink import Patience, Sink, open_sink
from importer.sources import (
    ReadOptions,
    Skips,
    SourceFile,
    discover,
    open_units,
    partition,
    shard_of,
    source_roots,
)

log = logging.getLogger("importer")

FILE_WRITE_MIN_INTERVAL = 1.0  # seconds: file-boundary checkpoints at most this often


@dataclass
class ChunkEv:
    job: Job
    chunk: Chunk
    fmt: str
    hash: str
    records: int = 0  # records read since the previous event
    skipped: dict[str, int] = field(default_factory=dict)
    acked: bool = False  # stored (or, for an unchanged last chunk, nothing to store)
    embedded: bool = False


@dataclass
class FileEndEv:
    job: Job
    end: Any  # sources.Pos after the last whole line read, None if the file was skipped
    fmt: str
    records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    acked: bool = True


@dataclass
class IdleEv:
    """Follow mode: everything seen so far was read; flush, write a heartbeat."""


Event = ChunkEv | FileEndEv


class Runner:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.stop_reason: str | None = None
        self.m: Metrics = metrics()
        self.mem = MemorySampler()
        self.fault = FaultHold(settings.fault_hold_mb_per_file)
        self.stats = RunStats()
        self.started = time.monotonic()
        self.loop_started = self.started
        self.loop_cpu_started = time.process_time()
        self.last_write = 0.0
        self.last_file_write = 0.0
        self.files_since_write = False
        self.ledger: collections.deque[Event] = collections.deque()
        self.waiting: str | None = None  # why no progress right now (heartbeat.waiting)
        self.sink: Sink | None = None
        self.store: CheckpointStore | None = None
        self.cp = Checkpoint()
        self.progress = Progress("off", 0)
        self.states: dict[str, contract.Known] = {}  # files read before (compact)
        self.dirty: dict[str, contract.FileState] = {}
        self.pending: dict[str, tuple[int, int]] = {}  # sid -> (bytes, mtime_ns) not yet read
        self.gone_kept: set[str] = set()
        self.files_total = 0
        self.files_read_this_run = 0
        self.recycled = False
        self.held: dict[str, int] = {}  # files whose last line had no newline (mtime_ns)
        self.threshold_bytes = 0
        self.opts = ReadOptions(
            settings.max_line_bytes,
            settings.jsonl_field,
            settings.include_tools,
            settings.tool_max_chars,
        )
        self.counter: TokenCounter | None = None
        self.embedder: Any = None

    # ----------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stop_reason is None:
            log.warning(
                "%s received: finishing the batch in hand, then checkpoint and exit 75", name
            )
            self.stop_reason = "sigterm" if signum == signal.SIGTERM else "interrupted"
        else:
            log.warning("second %s: exiting now; the last checkpoint stays valid", name)
            os._exit(contract.EXIT_TEMPFAIL)

    def _on_store_wait(self, why: str | None) -> None:
        """While the store is unreachable or held: count it, say why in the heartbeat."""
        self.waiting = why
        if why is None:
            return  # recovered: the next checkpoint write clears heartbeat.waiting
        self.m.qdrant_waits.inc()
        if self.store is not None and time.monotonic() - self.last_write >= 1.0:
            try:
                self._write(heartbeat_only=True)  # the store is busy failing: no flush here
            except Exception as e:
                log.warning("heartbeat write failed while waiting for the store: %s", e)

    def _should_stop(self) -> bool:
        return self.stop_reason is not None

    # ----------------------------------------------------------------------------------------
    def run(self) -> int:
        # handlers first: a SIGTERM during start-up (model load) also ends in exit 75
        old_handlers = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            return self._run()
        finally:
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
            if self.sink is not None:
                self.sink.close()

    def _run(self) -> int:
        s = self.s
        shard, shards = s.shard_pair
        self.threshold_bytes = s.threshold.resolve(self.mem.limit)
        self.m.memory_threshold.set(self.threshold_bytes)
        files = self._list()
        self.store = open_store(s.checkpoint)
        self.cp = self._start_checkpoint(self.store.load())
        self.files_total = len(files)
        dim, load_seconds = self._load_model()
        t0 = time.monotonic()
        try:
            self.sink = self._open_sink(dim)
        except Stop:
            log.warning("stopped while waiting for the store; nothing imported in this run")
            return self._end(self.stop_reason or "sigterm", contract.EXIT_TEMPFAIL)
        info = self.embedder.info
        log.info(
            "model %s (dim %d, max %d tokens) loaded from %s in %.2fs; store %s",
            info.name,
            info.dim,
            info.max_tokens,
            info.path,
            load_seconds,
            self.sink.where,
        )
        self.cp.manifest = f"{self.sink.where}#{contract.manifest_collection(s.collection)}"
        self.states = self.sink.load_manifest(lambda sid: shard_of(sid, shards) == shard)
        self.stats.store_open_seconds = time.monotonic() - t0
        self.stats.start_memory_bytes = self._sample()
        log.info(
            "shard %d/%d: %d files, %d with state; checkpoint %s, attempt %d; store %s; memory "
            "from %s, threshold %s (%s)%s",
            shard,
            shards,
            len(files),
            len(self.states),
            self.store.description,
            self.cp.attempt,
            self.sink.where,
            self.mem.source,
            s.threshold,
            f"{self.threshold_bytes // 2**20} MiB" if self.threshold_bytes else "off",
            "; following the source" if s.follow else "",
        )
        if s.metrics_port and serve(s.metrics_port):
            log.info("metrics on :%d/metrics", s.metrics_port)
        self.progress = Progress(s.progress, len(files))
        return self._loop(files)

    def _start_checkpoint(self, prev: Checkpoint | None) -> Checkpoint:
        """This run's checkpoint: the previous one's counters, a new attempt number."""
        s = self.s
        shard, shards = s.shard_pair
        if prev is not None and (prev.shard, prev.shards) != (shard, shards):
            assert self.store is not None
            raise ConfigError(
                f"checkpoint {self.store.description} belongs to shard {prev.shard}/{prev.shards},"
                f" not {shard}/{shards}: use another checkpoint location"
            )
        cp = prev.model_copy(deep=True) if prev else Checkpoint(shard=shard, shards=shards)
        cp.attempt = s.attempt if s.attempt is not None else (prev.attempt + 1 if prev else 0)
        cp.peak_memory_bytes, cp.last_exit, cp.follow, cp.complete = 0, None, s.follow, False
        return cp

    def _list(self) -> list[SourceFile]:
        shard, shards = self.s.shard_pair
        return partition(discover(self.s.source, allow_empty=self.s.follow), shard, shards)

    def _load_model(self) -> tuple[int, float]:
        from importer.model import Embedder  # heavy imports only here

        s = self.s
        t0 = time.monotonic()
        self.embedder = Embedder(s.model, s.model_dir, s.cache_dir, s.threads)
        info = self.embedder.info
        if s.chunk_size + 2 > info.max_tokens:
            raise ConfigError(
                f"chunk size {s.chunk_size} tokens exceeds the model's input of {info.max_tokens}"
                f" tokens minus 2 special tokens: use --chunk-size <= {info.max_tokens - 2}"
            )
        self.counter = TokenCounter(self.embedder.count_tokenizer)
        return int(info.dim), time.monotonic() - t0

    def _open_sink(self, dim: int) -> Sink:
        s = self.s
        return open_sink(
            s.qdrant_url,
            s.qdrant_api_key,
            s.qdrant_path,
            s.collection,
            s.create_collection,
            dim,
            Patience(self._should_stop, self._on_store_wait),
        )

    # ----------------------------------------------------------------------------------------
    def _events(self, files: list[SourceFile]) -> Iterator[Event | IdleEv]:
        from importer.watch import Watcher

        s = self.s
        watcher = Watcher(source_roots(s.source), s.watch, s.poll_interval) if s.follow else None
        try:
            while not self._should_stop():
                yield from self._pass(files)
                if watcher is None or self._should_stop():
                    return
                if self._recycle_due():  # follow mode: roll now, the next pod watches on
                    self.recycled = True
                    return
                yield IdleEv()
                while not watcher.wait(self.s.checkpoint_interval, self._should_stop):
                    if self._should_stop():
                        return
                    if self._held_settled():
                        break  # a last line without newline stopped changing: read it now
                    yield IdleEv()  # heartbeat while nothing changes
                files = self._list()
        finally:
            if watcher is not None:
                watcher.close()

    def _complete_tail(self, job: Job) -> bool:
        """Read a last line without its newline? One-shot: yes, the file is what it is now
        (if a writer was mid-line, the next run reads that line again from the start of the
        file's last chunk). Following: only once the file has not changed for settle_seconds;
        until then it waits for its newline."""
        return not self.s.follow or time.time() - job.mtime_ns / 1e9 >= self.s.settle_seconds

    def _held_settled(self) -> bool:
        return bool(self.held) and time.time() >= (
            max(self.held.values()) / 1e9 + self.s.settle_seconds
        )

    def _pass(self, files: list[SourceFile]) -> Iterator[Event]:
        """One scan of the source and the work it finds."""
        self.held.clear()
        listing = scan(files, self.states)
        self.files_total = len(files)
        self.m.files_total.set(self.files_total)
        if listing.vanished:
            self._count_skips({"vanished": listing.vanished})
        if not listing.jobs and not self.s.follow:
            log.info("nothing changed in the source since the last run")
        self._forget(listing.gone)
        self.pending = {j.sid: (max(0, j.size - j.floor), j.mtime_ns) for j in listing.jobs}
        if listing.jobs:
            self.cp.synced = False
        for job in listing.jobs:
            if self._recycle_due():
                self.recycled = True  # work remains: a planned roll, not the end
            if self._should_stop() or self.recycled:
                return
            yield from self._file_events(job)
            self.files_read_this_run += 1

    def _recycle_due(self) -> bool:
        n = self.s.recycle_every_files
        return bool(n) and self.files_read_this_run >= n

    def _forget(self, gone: list[str]) -> None:
        """Files that disappeared: keep their points, or delete them (``on_delete``)."""
        if not gone or self.sink is None:
            return
        if self.s.on_delete == "keep":
            for sid in set(gone) - self.gone_kept:
                self.gone_kept.add(sid)
                n = self.states[sid].chunks
                log.info("%s was deleted: keeping its %d points (--on-delete keep)", sid, n)
            return
        for sid in gone:
            st = self.states.pop(sid)
            self.dirty.pop(sid, None)
            self.sink.delete([contract.point_id(sid, i) for i in range(st.chunks)])
            self.sink.drop_manifest([sid])
            self._deleted(st.chunks, "deleted")
            log.info("%s was deleted: deleted its %d points", sid, st.chunks)

    def _deleted(self, n: int, change: str) -> None:
        self.cp.counters.deleted += n
        self.stats.points_deleted += n
        self.m.points_deleted.inc(n)
        self.m.changes.labels(change).inc()
        self.stats.changes[change] = self.stats.changes.get(change, 0) + 1

    # ----------------------------------------------------------------------------------------
    def _file_events(self, job: Job) -> Iterator[Event]:
        """Chunk events of one file from its job's start, then its end event."""
        s = self.s
        assert self.counter is not None
        if job.change == "truncated":
            self._rebase(job)
        job.state.cursor = job.start
        skips = Skips()
        skips.floor = job.floor
        settled = self._complete_tail(job)
        fmt = job.state.fmt or s.format
        opened = open_units(job.sf, fmt, pos_of(job.start), self.opts, skips, settled)
        if opened is None:
            yield FileEndEv(job, None, "", 0, self._drain(skips))
            return
        records = 0

        def counted(units: Iterator[Any]) -> Iterator[Any]:
            nonlocal records
            for u in units:
                records += u.start.offset >= job.floor
                yield u

        c = job.start
        for ch in chunk_units(
            counted(opened.units), self.counter, s.chunk_size, s.chunk_overlap, c.chunk, c.piece
        ):
            h = contract.text_hash(ch.text)
            keep = ch.chunk_index == job.keep_chunk and h == job.keep_hash
            job.emitted += 1
            yield ChunkEv(job, ch, opened.fmt, h, records, self._drain(skips), acked=keep)
            records = 0
        if opened.reader.pos.offset < job.size:
            self.held[job.sid] = job.mtime_ns
        yield FileEndEv(job, opened.reader.pos, opened.fmt, records, self._drain(skips))

    @staticmethod
    def _drain(skips: Skips) -> dict[str, int]:
        out = dict(skips.counts)
        skips.counts.clear()
        return out

    def _rebase(self, job: Job) -> None:
        """A truncated file: find, without embedding, where its new last chunk starts.

        Chunks before it are unchanged (a chunk only depends on what precedes its end); the
        last one is rebuilt, and the points beyond it are deleted when the file is done.
        """
        assert self.counter is not None
        s = self.s
        start = last = contract.Cursor()
        n = 0
        opened = open_units(
            job.sf,
            job.state.fmt or s.format,
            pos_of(start),
            self.opts,
            Skips(),
            self._complete_tail(job),
        )
        if opened is not None:
            for ch in chunk_units(opened.units, self.counter, s.chunk_size, s.chunk_overlap):
                last, start = start, cursor_after(ch)
                n += 1
        job.start = last if n else contract.Cursor()
        job.open_start = n > 0

    # ----------------------------------------------------------------------------------------
    def _loop(self, files: list[SourceFile]) -> int:
        s = self.s
        self.loop_started = time.monotonic()
        self.loop_cpu_started = time.process_time()
        window_chunks = s.batch_size * s.sort_window
        stream = self._events(files)
        exhausted = False
        try:
            while not exhausted and not self._should_stop():
                window, exhausted, idle = self._fill(stream, window_chunks)
                self._process(window)
                self._commit()
                if idle and not self.ledger:
                    self._caught_up()
                self._maybe_write()
                if self.stop_reason is None and self._over_threshold():
                    self.stop_reason = "threshold"
        except Stop:
            self.stop_reason = self.stop_reason or "sigterm"
        except Exception as e:
            log.exception("unexpected error; checkpointing what the store acknowledged")
            self._commit()
            return self._end(f"crash: {type(e).__name__}", 1)
        self._commit()
        if exhausted and not self.ledger and not s.follow and not self.recycled:
            self._caught_up()
            self.cp.complete = True
            return self._end("complete", contract.EXIT_OK)
        reason = self.stop_reason or ("recycle" if self.recycled else "incomplete")
        return self._end(reason, contract.EXIT_TEMPFAIL)

    def _fill(
        self, stream: Iterator[Event | IdleEv], size: int
    ) -> tuple[list[ChunkEv], bool, bool]:
        """Read events into the ledger until a window of chunks is full, the stream ends
        (exhausted) or follow mode caught up (idle)."""
        window: list[ChunkEv] = []
        while len(window) < size:
            ev = next(stream, None)
            if ev is None:
                return window, True, False
            if isinstance(ev, IdleEv):
                return window, False, True
            self.ledger.append(ev)
            if isinstance(ev, ChunkEv):
                if not ev.acked:
                    window.append(ev)
            elif len(self.ledger) % 1000 == 0:
                # many files without chunks (empty, skipped): keep the heartbeat going
                self._commit()
                self._maybe_write()
            if self._should_stop():
                break
        return window, False, False

    def _caught_up(self) -> None:
        """Everything the last scan found was read (lines still being written wait)."""
        if self.pending:
            self.cp.synced = False
            return
        if not self.cp.synced:
            log.info("caught up: every change seen so far is imported")
        self.cp.synced = True
        self.cp.last_sync = datetime.now(UTC)

    # ----------------------------------------------------------------------------------------
    def _process(self, window: list[ChunkEv]) -> None:
        if not window:
            return
        s = self.s
        assert self.sink is not None
        info = self.embedder.info
        batches = plan_batches(
            window, s.batch_size, s.token_budget, info.max_tokens, key=lambda e: e.chunk.tokens
        )
        for batch in batches:
            if self.stop_reason not in (None, "threshold"):
                return  # abandon the rest: the ledger prefix rule keeps the state exact
            t = time.monotonic()
            vecs = self.embedder.embed([e.chunk.text for e in batch])
            self.m.embed_seconds.observe(time.monotonic() - t)
            ids = [contract.point_id(e.job.sid, e.chunk.chunk_index) for e in batch]
            payloads = [chunk_payload(e.job.sid, e.chunk, e.fmt) for e in batch]
            t = time.monotonic()
            self.sink.upsert(ids, vecs.tolist(), payloads)
            self.m.upsert_seconds.observe(time.monotonic() - t)
            for e in batch:
                e.acked = e.embedded = True
            self.m.chunks.inc(len(batch))
            self.m.points.inc(len(batch))
            self.stats.chunks_embedded += len(batch)
            self.stats.points_upserted += len(batch)
            self._commit()
            self._maybe_write()
            self.progress.update(self.cp.files_done, self.stats.chunks_embedded, self._sample())
            if self.stop_reason is None and self._over_threshold():
                # finish the window in hand (a few bounded batches): its chunks were sorted by
                # length, so only a whole window guarantees that the state advances
                self.stop_reason = "threshold"

    def _commit(self) -> None:
        """Apply the acknowledged prefix of the ledger to the file states and counters."""
        c = self.cp.counters
        while self.ledger and self.ledger[0].acked:
            ev = self.ledger.popleft()
            c.records += ev.records
            self.stats.records += ev.records
            self.m.records.inc(ev.records)
            self._count_skips(ev.skipped)
            job = ev.job
            if isinstance(ev, ChunkEv):
                acked(job, ev.chunk, ev.hash)
                c.chunks += ev.embedded
                c.points += ev.embedded
            else:
                self._file_done(job, ev)
            self.dirty[job.sid] = job.state

    def _count_skips(self, skipped: dict[str, int]) -> None:
        """Skipped items by reason: in the checkpoint, this run's report and the metrics."""
        for k, v in skipped.items():
            self.cp.counters.skipped[k] = self.cp.counters.skipped.get(k, 0) + v
            self.stats.skipped[k] = self.stats.skipped.get(k, 0) + v
            self.m.skipped.labels(k).inc(v)

    def _file_done(self, job: Job, ev: FileEndEv) -> None:
        assert self.sink is not None
        stale = finish(job, ev.end, ev.fmt)
        self.states[job.sid] = contract.Known.of(job.state)
        if stale:
            self.sink.delete([contract.point_id(job.sid, i) for i in stale])
        held = job.size - job.state.size  # a last line still being written
        if held > 0 and ev.end is not None:
            self.pending[job.sid] = (held, job.mtime_ns)
        else:
            self.pending.pop(job.sid, None)
        if not job.consumed and not stale:
            return  # looked again at a last line still being written: nothing changed
        if stale or job.change != "appended":
            self._deleted(len(stale), job.change)
        else:
            self.m.changes.labels(job.change).inc()
            self.stats.changes[job.change] = self.stats.changes.get(job.change, 0) + 1
        self.cp.counters.files += 1
        self.stats.files_done += 1
        self.m.files.inc()
        self.files_since_write = True
        self.fault.file_done()

    # ----------------------------------------------------------------------------------------
    def _sample(self) -> int:
        cur = self.mem.sample()
        self.stats.peak_memory_bytes = max(self.stats.peak_memory_bytes, cur)
        self.m.memory.set(cur)
        return cur

    def _over_threshold(self) -> bool:
        if not self.threshold_bytes:
            return False
        cur = self._sample()
        if cur >= self.threshold_bytes:
            log.warning(
                "memory %d MiB >= threshold %d MiB: checkpoint and exit 75",
                cur // 2**20,
                self.threshold_bytes // 2**20,
            )
            return True
        return False

    def _maybe_write(self) -> None:
        now = time.monotonic()
        file_due = self.files_since_write and now - self.last_file_write >= FILE_WRITE_MIN_INTERVAL
        if file_due or now - self.last_write >= self.s.checkpoint_interval:
            self._write()

    def _write(self, heartbeat_only: bool = False) -> None:
        """Make the acknowledged points durable, write the checkpoint, then the file states.

        In this order the checkpoint's counters never miss work that was done: a kill between
        the two writes only makes a restart redo (and count) the chunks since the last states.
        """
        assert self.store is not None
        cur = self._sample()
        if self.sink is not None and not heartbeat_only:
            self.sink.sync()
        cp = self.cp
        cp.files_total = self.files_total
        cp.files_done = max(0, self.files_total - len(self.pending))
        cp.lag = _lag(self.pending)
        cp.peak_memory_bytes = max(cp.peak_memory_bytes, self.stats.peak_memory_bytes)
        cp.heartbeat = Heartbeat(
            time=datetime.now(UTC), memory_bytes=cur, pod=self.s.pod_name, waiting=self.waiting
        )
        self.cp = self.store.save(cp)
        if self.sink is not None and self.dirty and not heartbeat_only:
            self.sink.save_manifest(list(self.dirty.values()))
            self.dirty.clear()
        self._publish()
        self.m.checkpoint_writes.inc()
        now = time.monotonic()
        self.last_write = now
        if self.files_since_write:
            self.last_file_write = now
            self.files_since_write = False

    def _publish(self) -> None:
        lag = self.cp.lag
        self.m.files_total.set(self.cp.files_total)
        self.m.files_done.set(self.cp.files_done)
        self.m.lag_files.set(lag.files)
        self.m.lag_bytes.set(lag.bytes)
        age = (datetime.now(UTC) - lag.oldest).total_seconds() if lag.oldest else 0.0
        self.m.lag_seconds.set(max(0.0, age))
        self.m.synced.set(1 if self.cp.synced else 0)

    def _end(self, reason: str, code: int) -> int:
        """Write the final checkpoint and report; 0 and 75 promise a saved checkpoint."""
        self.cp.last_exit = reason
        if self.store is not None:
            try:
                self._write()
            except Exception:
                log.exception("could not write the checkpoint")
                # the previous checkpoint stays valid, so a restart only redoes work
                reason, code = "crash: checkpoint write failed", 1
        self.progress.close()
        loop = time.monotonic() - self.loop_started
        self.stats.exit_reason = reason
        self.stats.elapsed_seconds = time.monotonic() - self.started
        format_summary(self.cp, self.stats, loop, time.process_time() - self.loop_cpu_started)
        if self.s.report:
            write_report(self.s.report, self.stats)
        return code


def _lag(pending: dict[str, tuple[int, int]]) -> Lag:
    if not pending:
        return Lag()
    oldest = min(m for _, m in pending.values())
    return Lag(
        files=len(pending),
        bytes=sum(b for b, _ in pending.values()),
        oldest=datetime.fromtimestamp(oldest / 1e9, UTC),
    )
