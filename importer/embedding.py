"""Chunks to stored points: a window of chunks sorted into batches, each embedded and upserted
(acknowledged when the upsert returns)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from eio_common import contract
from importer.batching import plan_batches
from importer.counts import Counts
from importer.ledger import ChunkEv
from importer.payload import chunk_payload
from importer.settings import Settings
from importer.sink import Sink


class Embedding:
    def __init__(
        self,
        settings: Settings,
        embedder: Any,
        sink: Sink,
        counts: Counts,
        guard: Callable[[], None] = lambda: None,
    ) -> None:
        self.s = settings
        self.embedder = embedder
        self.sink = sink
        self.counts = counts
        self.guard = guard  # raises if this run may no longer write (the fence)

    def batches(self, window: list[ChunkEv]) -> list[list[ChunkEv]]:
        """Batches of similar length within the token budget (less padding)."""
        s, info = self.s, self.embedder.info
        return plan_batches(
            window, s.batch_size, s.token_budget, info.max_tokens, key=lambda e: e.chunk.tokens
        )

    def store(self, batch: list[ChunkEv]) -> None:
        """Embed a batch and store its points; its chunks are then acknowledged."""
        m = self.counts.m
        t = time.monotonic()
        vecs = self.embedder.embed([e.chunk.text for e in batch])
        m.embed_seconds.observe(time.monotonic() - t)
        ids = [contract.point_id(e.job.sid, e.chunk.chunk_index) for e in batch]
        payloads = [chunk_payload(e.job.sid, e.chunk, e.fmt) for e in batch]
        self.guard()  # right before the write: never points of a superseded attempt
        t = time.monotonic()
        self.sink.upsert(ids, vecs.tolist(), payloads)
        m.upsert_seconds.observe(time.monotonic() - t)
        for e in batch:
            e.acked = e.embedded = True
        self.counts.upserted(len(batch))
