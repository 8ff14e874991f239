"""The import loop: files -> units -> chunks -> batches -> vectors -> Qdrant -> checkpoint.

Ordering guarantee: every event of the stream (a chunk, the end of a file) enters a ledger in
stream order. A chunk is *acknowledged* once Qdrant acknowledged its point (``wait=True``). The
checkpoint only ever advances over the longest acknowledged prefix of the ledger, so whatever
stops the process (threshold, SIGTERM, SIGKILL, OOM, crash), a restart resumes at a point
from which it reproduces the same chunks, the same point IDs and the same vectors.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from importer import contract
from importer.batching import plan_batches
from importer.checkpoint_store import CheckpointStore, open_store
from importer.chunking import Chunk, TokenCounter, chunk_units
from importer.contract import Checkpoint, Counters, Heartbeat, encode_ranges, iter_ranges
from importer.memory import FaultHold, MemorySampler
from importer.metrics import Metrics, metrics, serve
from importer.progress import Progress, format_summary
from importer.settings import ConfigError, Settings
from importer.sources import Skips, SourceFile, discover, files_digest_of, open_units, partition

log = logging.getLogger("importer")

FILE_WRITE_MIN_INTERVAL = 1.0  # seconds: file-boundary checkpoints at most this often


@dataclass
class ChunkEv:
    file_idx: int
    chunk: Chunk
    fmt: str
    records: int = 0  # records read since the previous event
    skipped: dict[str, int] = field(default_factory=dict)
    acked: bool = False


@dataclass
class FileEndEv:
    file_idx: int
    records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    acked: bool = True


Event = ChunkEv | FileEndEv


class _Tally:
    """Skips and records counted since the last event (attributed to the next event)."""

    def __init__(self) -> None:
        self.skips = Skips()
        self.records = 0

    def drain(self) -> tuple[int, dict[str, int]]:
        r, s = self.records, dict(self.skips.counts)
        self.records = 0
        self.skips.counts.clear()
        return r, s


class Runner:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.stop_reason: str | None = None
        self.m: Metrics = metrics()
        self.mem = MemorySampler()
        self.fault = FaultHold(settings.fault_hold_mb_per_file)
        self.peak = 0
        self.files_this_run = 0
        self.started = time.monotonic()
        self.last_write = 0.0
        self.last_file_write = 0.0
        self.ledger: collections.deque[Event] = collections.deque()
        self.chunks_this_run = 0
        self.waiting: str | None = None  # why no progress right now (heartbeat.waiting)

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

    def _open_sink(self, sink_cls: Any, dim: int) -> Any:
        s = self.s
        return sink_cls(
            s.qdrant_url,
            s.qdrant_api_key,
            s.qdrant_path,
            s.collection,
            s.create_collection,
            dim,
            self._should_stop,
            self._on_qdrant_wait,
        )

    def _on_qdrant_wait(self, why: str | None) -> None:
        """While Qdrant is unreachable: count it, say why in the heartbeat, keep it fresh."""
        self.waiting = why
        if why is None:
            return  # recovered: the next checkpoint write clears heartbeat.waiting
        self.m.qdrant_waits.inc()
        if getattr(self, "cp", None) is not None:
            try:
                self._maybe_write()
            except Exception as e:
                log.warning("heartbeat write failed while waiting for Qdrant: %s", e)

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
            sink = getattr(self, "sink", None)
            if sink is not None:
                sink.close()

    def _run(self) -> int:
        s = self.s
        shard, shards = s.shard_pair
        threshold = s.threshold
        limit = self.mem.limit
        self.threshold_bytes = threshold.resolve(limit)
        self.m.memory_threshold.set(self.threshold_bytes)

        all_files = discover(s.source)
        self.files: list[SourceFile] = partition(all_files, shard, shards)
        digest = files_digest_of(self.files)
        self.store: CheckpointStore = open_store(s.checkpoint)
        prev = self.store.load()
        if prev is not None and (prev.shard, prev.shards) != (shard, shards):
            raise ConfigError(
                f"checkpoint {self.store.description} belongs to shard {prev.shard}/{prev.shards},"
                f" not {shard}/{shards}: use another checkpoint location"
            )
        if prev is not None and prev.files_digest != digest:
            log.warning(
                "the source file list changed since the checkpoint (digest %s -> %s): starting "
                "this shard over; point IDs are deterministic, so nothing is duplicated",
                prev.files_digest,
                digest,
            )
            prev = Checkpoint(shard=shard, shards=shards, attempt=prev.attempt, counters=Counters())
        attempt = s.attempt if s.attempt is not None else (prev.attempt + 1 if prev else 0)
        self.cp = (prev or Checkpoint(shard=shard, shards=shards)).model_copy(
            update={
                "shard": shard,
                "shards": shards,
                "files_total": len(self.files),
                "files_digest": digest,
                "attempt": attempt,
                "peak_memory_bytes": 0,
                "last_exit": None,
            }
        )
        self.done: set[int] = set(iter_ranges(self.cp.done))
        self.m.files_total.set(len(self.files))
        self.m.files_done.set(len(self.done))
        plan = (
            "shard %d/%d: %d of %d files (%d done before), checkpoint %s, attempt %d, memory "
            "from %s, threshold %s (%s)",
            shard,
            shards,
            len(self.files),
            len(all_files),
            len(self.done),
            self.store.description,
            attempt,
            self.mem.source,
            threshold,
            f"{self.threshold_bytes // 2**20} MiB" if self.threshold_bytes else "off",
        )
        if prev is not None and prev.complete and len(self.done) >= len(self.files):
            log.info(*plan)
            log.info("checkpoint says complete: nothing to do")
            self.cp.last_exit = "complete"
            self._write(force=True)
            return contract.EXIT_OK

        from importer.model import Embedder  # heavy imports only when there is work

        t0 = time.monotonic()
        self.embedder = Embedder(s.model, s.model_dir, s.cache_dir, s.threads)
        info = self.embedder.info
        if s.chunk_size + 2 > info.max_tokens:
            raise ConfigError(
                f"chunk size {s.chunk_size} tokens exceeds the model's input of {info.max_tokens}"
                f" tokens minus 2 special tokens: use --chunk-size <= {info.max_tokens - 2}"
            )
        load_seconds = time.monotonic() - t0
        self.counter = TokenCounter(self.embedder.count_tokenizer)

        from importer.sink import QdrantSink, Stop

        try:
            self.sink = self._open_sink(QdrantSink, info.dim)
        except Stop:
            log.warning("stopped while waiting for Qdrant; nothing imported in this run")
            self.cp.last_exit = self.stop_reason or "sigterm"
            self.progress = Progress("off", len(self.files))
            self._safe_write()
            self._finish(self.cp.last_exit)
            return contract.EXIT_TEMPFAIL
        log.info(
            "model %s (dim %d, max %d tokens) loaded from %s in %.2fs; Qdrant %s",
            info.name,
            info.dim,
            info.max_tokens,
            info.path,
            load_seconds,
            self.sink.where,
        )
        log.info(*plan)
        if s.metrics_port and serve(s.metrics_port):
            log.info("metrics on :%d/metrics", s.metrics_port)
        self.progress = Progress(s.progress, len(self.files))
        return self._loop()

    # ----------------------------------------------------------------------------------------
    def _events(self) -> Iterator[Event]:
        s = self.s
        tally = _Tally()
        for idx, sf in enumerate(self.files):
            if idx in self.done:
                continue
            if self._should_stop():
                return
            start_rec = self.cp.offsets.get(idx, 0)
            start_chunk = self.cp.chunk_offsets.get(idx, 0)
            start_piece = self.cp.piece_offsets.get(idx, 0)
            opened = open_units(
                sf, s.format, start_rec, s.max_line_bytes, s.jsonl_field, tally.skips
            )
            if opened is not None:
                fmt, units = opened

                def counted(u: Iterator[Any]) -> Iterator[Any]:
                    for x in u:
                        tally.records += 1
                        yield x

                for ch in chunk_units(
                    counted(units),
                    self.counter,
                    s.chunk_size,
                    s.chunk_overlap,
                    start_chunk,
                    start_piece,
                ):
                    r, sk = tally.drain()
                    yield ChunkEv(idx, ch, fmt, r, sk)
            r, sk = tally.drain()
            yield FileEndEv(idx, r, sk)
            self.files_read_this_run += 1
            if s.recycle_every_files and self.files_read_this_run >= s.recycle_every_files:
                return

    def _loop(self) -> int:
        s = self.s
        self.loop_started = time.monotonic()
        self.loop_cpu_started = time.process_time()
        self.files_read_this_run = 0
        window_chunks = s.batch_size * s.sort_window
        stream = self._events()
        exhausted = False
        try:
            while not exhausted and not self._should_stop():
                window: list[ChunkEv] = []
                while len(window) < window_chunks:
                    ev = next(stream, None)
                    if ev is None:
                        exhausted = True
                        break
                    self.ledger.append(ev)
                    if isinstance(ev, ChunkEv):
                        window.append(ev)
                    elif len(self.ledger) % 1000 == 0:
                        # many files without chunks (empty, skipped): keep the heartbeat going
                        self._commit()
                        self._maybe_write()
                    if self._should_stop():
                        break
                self._process(window)
                self._commit()
                self._maybe_write()
                if self.stop_reason is None and self._over_threshold():
                    self.stop_reason = "threshold"
        except Exception as e:
            from importer.sink import Stop

            if isinstance(e, Stop):
                self.stop_reason = self.stop_reason or "sigterm"
            else:
                log.exception("unexpected error; checkpointing what Qdrant acknowledged")
                self._commit()
                self.cp.last_exit = f"crash: {type(e).__name__}"
                self._safe_write()
                self._finish("crash")
                return 1
        self._commit()
        complete = len(self.done) >= len(self.files) and not self.ledger
        if complete:
            self.cp.complete = True
            self.cp.last_exit = "complete"
            code = contract.EXIT_OK
            reason = "complete"
        else:
            reason = self.stop_reason or ("recycle" if s.recycle_every_files else "incomplete")
            self.cp.last_exit = reason
            code = contract.EXIT_TEMPFAIL
        if not self._safe_write():
            # 0 and 75 promise a saved checkpoint; the previous one stays valid, so a restart
            # only redoes work
            reason, code = "crash: checkpoint write failed", 1
        self._finish(reason)
        return code

    # ----------------------------------------------------------------------------------------
    def _process(self, window: list[ChunkEv]) -> None:
        if not window:
            return
        s = self.s
        info = self.embedder.info
        batches = plan_batches(
            window, s.batch_size, s.token_budget, info.max_tokens, key=lambda e: e.chunk.tokens
        )
        for batch in batches:
            if self.stop_reason not in (None, "threshold"):
                return  # abandon the rest: the ledger prefix rule keeps the checkpoint exact
            t = time.monotonic()
            vecs = self.embedder.embed([e.chunk.text for e in batch])
            self.m.embed_seconds.observe(time.monotonic() - t)
            ids = [
                contract.point_id(self.files[e.file_idx].source_id, e.chunk.chunk_index)
                for e in batch
            ]
            payloads = [self._payload(e) for e in batch]
            t = time.monotonic()
            self.sink.upsert(ids, vecs, payloads)
            self.m.upsert_seconds.observe(time.monotonic() - t)
            for e in batch:
                e.acked = True
            self.m.chunks.inc(len(batch))
            self.m.points.inc(len(batch))
            self.chunks_this_run += len(batch)
            self._commit()
            self._maybe_write()
            self.progress.update(len(self.done), self.chunks_this_run, self._sample())
            if self.stop_reason is None and self._over_threshold():
                # finish the window in hand (a few bounded batches): its chunks were sorted by
                # length, so only a whole window guarantees that the checkpoint advances
                self.stop_reason = "threshold"

    def _payload(self, e: ChunkEv) -> dict[str, Any]:
        c = e.chunk
        p: dict[str, Any] = {
            "text": c.text,
            "source": self.files[e.file_idx].source_id,
            "chunk_index": c.chunk_index,
            "format": e.fmt,
        }
        if c.roles:
            p["role"] = c.roles[0] if len(set(c.roles)) == 1 else "mixed"
            p["roles"] = c.roles
        if c.session is not None:
            p["session"] = c.session
        return p

    def _commit(self) -> None:
        """Apply the acknowledged prefix of the ledger to the checkpoint."""
        cp = self.cp
        counters = cp.counters
        while self.ledger and self.ledger[0].acked:
            ev = self.ledger.popleft()
            counters.records += ev.records
            for k, v in ev.skipped.items():
                counters.skipped[k] = counters.skipped.get(k, 0) + v
                self.m.skipped.labels(k).inc(v)
            self.m.records.inc(ev.records)
            if isinstance(ev, ChunkEv):
                cp.offsets[ev.file_idx] = ev.chunk.resume_record
                cp.chunk_offsets[ev.file_idx] = ev.chunk.resume_chunk
                if ev.chunk.resume_piece:
                    cp.piece_offsets[ev.file_idx] = ev.chunk.resume_piece
                else:
                    cp.piece_offsets.pop(ev.file_idx, None)
                counters.chunks += 1
                counters.points += 1
            else:
                self.done.add(ev.file_idx)
                cp.offsets.pop(ev.file_idx, None)
                cp.chunk_offsets.pop(ev.file_idx, None)
                cp.piece_offsets.pop(ev.file_idx, None)
                counters.files += 1
                self.files_this_run += 1
                self.m.files.inc()
                self.m.files_done.set(len(self.done))
                self._files_since_write = True
                self.fault.file_done()

    _files_since_write = False

    def _sample(self) -> int:
        cur = self.mem.sample()
        self.peak = max(self.peak, cur)
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
        file_due = self._files_since_write and now - self.last_file_write >= FILE_WRITE_MIN_INTERVAL
        if file_due or now - self.last_write >= self.s.checkpoint_interval:
            self._write()

    def _write(self, force: bool = False) -> None:
        cur = self._sample()
        self.cp.done = encode_ranges(self.done)
        self.cp.peak_memory_bytes = max(self.cp.peak_memory_bytes, self.peak)
        self.cp.heartbeat = Heartbeat(
            time=datetime.now(UTC),
            memory_bytes=cur,
            pod=self.s.pod_name,
            waiting=self.waiting,
        )
        sink = getattr(self, "sink", None)
        if sink is not None:
            sink.sync()  # points behind this checkpoint are durable before it is written
        self.cp = self.store.save(self.cp)
        self.done = set(iter_ranges(self.cp.done)) | self.done
        self.m.checkpoint_writes.inc()
        now = time.monotonic()
        self.last_write = now
        if self._files_since_write:
            self.last_file_write = now
            self._files_since_write = False

    def _safe_write(self) -> bool:
        try:
            self._write(force=True)
        except Exception:
            log.exception("could not write the checkpoint")
            return False
        return True

    def _finish(self, reason: str) -> None:
        self.progress.close()
        text = format_summary(
            self.cp,
            reason,
            time.monotonic() - self.started,
            self.chunks_this_run,
            self.files_this_run,
            self.peak,
            time.monotonic() - getattr(self, "loop_started", self.started),
            time.process_time() - getattr(self, "loop_cpu_started", 0.0),
        )
        print(text, file=sys.stderr, flush=True)
