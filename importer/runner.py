"""The import loop: scan -> files -> units -> chunks -> batches -> vectors -> store -> state.

Progress is kept per file (``importer.scan``): a byte cursor, a head fingerprint and the number
of chunks, in a manifest beside the points. The checkpoint (ConfigMap or file) is a small summary.

The runner starts the parts and moves work between them:

- ``importer.stream``: scans (and, with ``--follow``, watches) the source; ``importer.reading``
  turns a file's job into events;
- ``importer.ledger``: every event in stream order; file states only advance over its
  acknowledged prefix, and it says when the importer has caught up;
- ``importer.embedding``: windows of chunks, sorted into batches, embedded and stored;
- ``importer.checkpointer``: points durable, then the checkpoint, then the file states;
- ``importer.counts``: each count once, for the checkpoint, the report and the metrics;
- ``importer.memory``: the threshold; ``importer.signals``: SIGTERM.

So whatever stops the process (threshold, SIGTERM, SIGKILL, OOM, crash), a restart resumes at a
point from which it reproduces the same chunks, the same point IDs and the same vectors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from eio_common import contract
from eio_common.retry import Stop
from importer.builds import builds_of, identity_of, settle_identity, start_rebuild
from importer.checkpoint_store import Superseded, open_store
from importer.checkpointer import Checkpointer, start_checkpoint
from importer.chunking import TokenCounter
from importer.counts import Counts
from importer.embedding import Embedding
from importer.ledger import ChunkEv, Event, FileEndEv, IdleEv, Ledger
from importer.memory import FaultHold, MemoryGuard, MemorySampler
from importer.metrics import metrics, serve
from importer.progress import Progress, format_summary, write_report
from importer.readapi import TextModel
from importer.reading import FileReader
from importer.selfcheck import SelfCheck
from importer.settings import ConfigError, Settings
from importer.signals import StopFlag
from importer.sink import Patience, Sink, open_sink
from importer.sources import SourceFile, discover, partition, shard_of
from importer.stream import EventStream
from importer.switcher import ORDERS_POLL, Switcher

log = logging.getLogger("importer")


class Runner:
    # the parts, made by _setup (inside run(), so that a SIGTERM during set-up exits 75)
    counts: Counts
    mem: MemoryGuard
    ledger: Ledger
    ckpt: Checkpointer
    files: list[SourceFile]
    embedding: Embedding
    switcher: Switcher  # --rebuild: when readers switch to the new version

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.stop = StopFlag()
        self.started = time.monotonic()
        self.loop_started, self.loop_cpu_started = self.started, time.process_time()
        self.fault = FaultHold(settings.fault_hold_mb_per_file)
        self.sink: Sink | None = None
        self.embedder: Any = None
        self.progress = Progress("off", 0)
        self.selfcheck = SelfCheck(settings)

    def _setup(self) -> None:
        s = self.s
        m = metrics()
        sampler = MemorySampler()
        threshold = s.threshold.resolve(sampler.limit)
        m.memory_threshold.set(threshold)
        self.files = self._list()
        store = open_store(s.checkpoint, s.attempt)
        cp = start_checkpoint(s, store.load(), store.description)
        self.counts = Counts(cp.counters, m)
        self.mem = MemoryGuard(sampler, threshold, self.counts.memory)
        self.ledger = Ledger({}, self.counts, cp.synced, cp.last_sync)
        self.ledger.files_total = len(self.files)
        self.ckpt = Checkpointer(
            store, cp, self.counts, self.ledger, self.mem.sample, s.checkpoint_interval, s.pod_name
        )

    def run(self) -> int:
        # handlers first: a SIGTERM during start-up (model load) also ends in exit 75
        self.stop.install()
        try:
            return self._run()
        except Superseded as e:
            log.warning("%s; stopping without writing (exit %d)", e, contract.EXIT_SUPERSEDED)
            return contract.EXIT_SUPERSEDED
        finally:
            self.stop.restore()
            if self.sink is not None:
                self.sink.close()

    def _list(self) -> list[SourceFile]:
        shard, shards = self.s.shard_pair
        return partition(discover(self.s.source, allow_empty=self.s.follow), shard, shards)

    # ----------------------------------------------------------------------------------------
    def _run(self) -> int:
        s = self.s
        self._setup()
        counter, load_seconds = self._load_model()
        t0 = time.monotonic()
        try:
            self.sink = self._open_sink()
        except Stop:
            log.warning("stopped while waiting for the store; nothing imported in this run")
            return self._end(self.stop.reason or "sigterm", contract.EXIT_TEMPFAIL)
        self.ckpt.attach(self.sink)
        self.switcher.sink = self.sink
        self.embedding = Embedding(s, self.embedder, self.sink, self.counts, self.ckpt.guard)
        info = self.embedder.info
        log.info(
            "model %s (dim %d, max %d tokens) loaded from %s in %.2fs; store %s",
            *(info.name, info.dim, info.max_tokens, info.path, load_seconds, self.sink.where),
        )
        where = self.switcher.plan.target if self.switcher.plan else s.collection
        settle_identity(self.sink, identity_of(s, self.embedder.info), where)
        self.ckpt.cp.manifest = f"{self.sink.where}#{contract.manifest_collection(s.collection)}"
        shard, shards = s.shard_pair
        self.ledger.states = self.sink.load_manifest(lambda sid: shard_of(sid, shards) == shard)
        self.counts.run.store_open_seconds = time.monotonic() - t0
        self.counts.run.start_memory_bytes = self.mem.sample()
        self._log_start()
        if s.metrics_port and serve(s.metrics_port):
            log.info("metrics on :%d/metrics", s.metrics_port)
        self.progress = Progress(s.progress, len(self.files))
        reader = FileReader(s, counter)
        stream = EventStream(s, reader, self.ledger, self._list, self.stop, self.ckpt.forget)
        stream.idle_wait = lambda: ORDERS_POLL if self.switcher.waiting else None
        return self._loop(stream)

    def _log_start(self) -> None:
        s, threshold = self.s, self.mem.threshold_bytes
        assert self.sink is not None
        log.info(
            "shard %d/%d: %d files, %d with state; checkpoint %s, attempt %d; store %s; memory "
            "from %s, threshold %s (%s)%s",
            *s.shard_pair,
            len(self.files),
            len(self.ledger.states),
            self.ckpt.store.description,
            self.ckpt.cp.attempt,
            self.sink.where,
            self.mem.sampler.source,
            s.threshold,
            f"{threshold // 2**20} MiB" if threshold else "off",
            "; following the source" if s.follow else "",
        )

    def _load_model(self) -> tuple[TokenCounter, float]:
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
        return TokenCounter(self.embedder.count_tokenizer), time.monotonic() - t0

    def _open_sink(self) -> Sink:
        s = self.s
        patience = Patience(self.stop, self.ckpt.on_store_wait)
        cp, dim = self.ckpt.cp, int(self.embedder.info.dim)
        rebuild = start_rebuild(s, identity_of(s, self.embedder.info), patience, cp)
        self.switcher = Switcher(s, rebuild, self.ckpt)
        physical, serve = (rebuild.target, rebuild.active) if rebuild else ("",) * 2
        builds = builds_of(s, cp, rebuild)
        return open_sink(
            s.qdrant_url, s.qdrant_api_key, s.qdrant_path, s.collection,
            s.create_collection or rebuild is not None, dim, patience,
            reads=s.read_address_pair, peers=s.read_peers, physical=physical or None,
            serve=serve or None, builds=builds, text=TextModel.of(self.embedder),
        )  # fmt: skip

    # ----------------------------------------------------------------------------------------
    def _loop(self, stream: EventStream) -> int:
        self.loop_started, self.loop_cpu_started = time.monotonic(), time.process_time()
        events = stream.events(self.files)
        exhausted = False
        try:
            while not exhausted and not self.stop():
                window, exhausted = self._fill(events)
                self._process(window)
                self._commit()  # at an idle heartbeat too: it refreshes lastSync
                self.switcher.poll()
                self.ckpt.maybe_write()
                if self.selfcheck.due(self.ledger.synced and not self.ledger.events):
                    self.selfcheck.check(self.ckpt)
                if self.stop.reason is None and self.mem.over():
                    self.stop.reason = "threshold"
        except Stop:
            self.stop.reason = self.stop.reason or "sigterm"
        except Superseded:
            raise  # a newer attempt owns the shard: no final checkpoint, nothing written
        except Exception as e:
            log.exception("unexpected error; checkpointing what the store acknowledged")
            self._commit()
            return self._end(f"crash: {type(e).__name__}", 1)
        self._commit()
        if exhausted and not self.ledger.events and not self.s.follow and not stream.recycled:
            self.switcher.ready()
            if self.switcher.waiting and not self.switcher.wait(self.stop):
                return self._end(self.stop.reason or "sigterm", contract.EXIT_TEMPFAIL)
            self.ckpt.cp.complete = True
            if self.selfcheck.enabled:
                self.selfcheck.check(self.ckpt)
            return self._end("complete", contract.EXIT_OK)
        reason = self.stop.reason or ("recycle" if stream.recycled else "incomplete")
        return self._end(reason, contract.EXIT_TEMPFAIL)

    def _fill(self, events: Iterator[Event | IdleEv]) -> tuple[list[ChunkEv], bool]:
        """Read events into the ledger until a window of chunks is full, the stream ends
        (exhausted, True) or follow mode is idle (everything seen was read)."""
        size = self.s.batch_size * self.s.sort_window
        window: list[ChunkEv] = []
        while len(window) < size:
            ev = next(events, None)
            if ev is None:
                return window, True
            if isinstance(ev, IdleEv):
                return window, False
            if self.ledger.add(ev):
                assert isinstance(ev, ChunkEv)
                window.append(ev)
            elif isinstance(ev, FileEndEv) and len(self.ledger.events) % 1000 == 0:
                # many files without chunks (empty, skipped): keep the heartbeat going
                self._commit()
                self.ckpt.maybe_write()
            if self.stop():
                break
        return window, False

    def _caught_up(self) -> None:
        if self.ledger.caught_up(datetime.now(UTC)):
            log.info("caught up: every change seen so far is imported")
            if self.s.follow:
                self.switcher.ready()

    # ----------------------------------------------------------------------------------------
    def _process(self, window: list[ChunkEv]) -> None:
        if not window:
            return
        for batch in self.embedding.batches(window):
            if self.stop.reason not in (None, "threshold"):
                return  # abandon the rest: the ledger prefix rule keeps the state exact
            self.embedding.store(batch)  # checks the fence before its upsert
            self._commit()
            self.ckpt.maybe_write()
            self.progress.update(
                self.ledger.files_done, self.counts.run.chunks_embedded, self.mem.sample()
            )
            if self.stop.reason is None and self.mem.over():
                # finish the window in hand (a few bounded batches): its chunks were sorted by
                # length, so only a whole window guarantees that the state advances
                self.stop.reason = "threshold"

    def _commit(self) -> None:
        """Apply the acknowledged prefix of the ledger; retire the points it made stale."""
        stale, files = self.ledger.commit()
        self.ckpt.retire(stale, self.s.fault_exit_before_stale_delete)
        for _ in range(files):
            self.ckpt.files_finished()
            self.fault.file_done()
        self._caught_up()  # the work, not the next idle heartbeat, says when a pass is done

    # ----------------------------------------------------------------------------------------
    def _end(self, reason: str, code: int) -> int:
        """Write the final checkpoint and report; 0 and 75 promise a saved checkpoint."""
        self.ckpt.cp.last_exit = reason
        try:
            self.ckpt.write()
        except Superseded:
            raise
        except Exception:
            log.exception("could not write the checkpoint")
            # the previous checkpoint stays valid, so a restart only redoes work
            reason, code = "crash: checkpoint write failed", 1
        self.progress.close(self.ledger.files_done)
        loop = time.monotonic() - self.loop_started
        run = self.counts.run
        run.exit_reason = reason
        run.elapsed_seconds = time.monotonic() - self.started
        format_summary(self.ckpt.cp, run, loop, time.process_time() - self.loop_cpu_started)
        if self.s.report:
            write_report(self.s.report, run)
        return code
