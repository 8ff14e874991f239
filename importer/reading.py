"""Reading one file's job into ledger events: its chunks from the job's start, then its end.

Following a file that is still being written, its open end waits until the file has settled
(``settle_seconds`` without a change): a last line without its newline is not read, and its
last chunk, unless sealed, is *withheld* (not embedded; the file state stays unfinished at the
start of that chunk, so the next scan or a restart reads it again). A one-shot run reads all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from eio_common import contract
from importer.chunking import TokenCounter, chunk_units, sealed, settled
from importer.ledger import ChunkEv, Event, FileEndEv
from importer.scan import Job, cursor_after, pos_of
from importer.settings import Settings
from importer.sources import ReadOptions, Skips, open_units


def _drain(skips: Skips) -> dict[str, int]:
    out = dict(skips.counts)
    skips.counts.clear()
    return out


class FileReader:
    def __init__(self, settings: Settings, counter: TokenCounter) -> None:
        s = self.s = settings
        self.counter = counter
        self.opts = ReadOptions(s.max_line_bytes, s.jsonl_field, s.include_tools, s.tool_max_chars)
        self.held: dict[str, int] = {}  # files whose last line had no newline (mtime_ns)

    def complete_tail(self, job: Job) -> bool:
        """Read the open end of the file (a last line without its newline, an unsealed last
        chunk)? One-shot: yes, the file is what it is now (if a writer was mid-line, the next
        run reads that line again from the start of the file's last chunk). Following: only
        once the file has not changed for settle_seconds; until then it waits."""
        s = self.s
        return settled(s.follow, s.settle_seconds, job.mtime_ns, time.time())

    def held_due(self) -> float | None:
        """Seconds until the first held file (open end waiting) settles; None if none."""
        if not self.held:
            return None
        return min(self.held.values()) / 1e9 + self.s.settle_seconds - time.time()

    def held_settled(self) -> bool:
        """A held file stopped changing: time to read its open end."""
        due = self.held_due()
        return due is not None and due <= 0

    def events(self, job: Job) -> Iterator[Event]:
        """Chunk events of one file from its job's start, then its end event."""
        s = self.s
        if job.change == "truncated":
            self._rebase(job)
        job.state.cursor = job.start
        skips = Skips()
        skips.floor = job.floor
        fmt = job.state.fmt or s.format
        final = self.complete_tail(job)
        opened = open_units(job.sf, fmt, pos_of(job.start), self.opts, skips, final)
        if opened is None:
            yield FileEndEv(job, None, "", 0, _drain(skips))
            return
        records = 0

        def counted(units: Iterator[Any]) -> Iterator[Any]:
            nonlocal records
            for u in units:
                records += u.start.offset >= job.floor
                yield u

        c = job.start
        chunks = chunk_units(
            counted(opened.units), self.counter, s.chunk_size, s.chunk_overlap, c.chunk, c.piece
        )
        for ch, done in sealed(chunks):
            h = contract.text_hash(ch.text)
            keep = ch.chunk_index == job.keep_chunk and h == job.keep_hash
            if not (done or keep or final):
                job.withheld = True  # the last chunk may still grow: embed it once settled
                break
            job.emitted += 1
            yield ChunkEv(job, ch, opened.fmt, h, records, _drain(skips), acked=keep)
            records = 0
        if opened.reader.pos.offset < job.size or job.withheld:
            self.held[job.sid] = job.mtime_ns
        yield FileEndEv(job, opened.reader.pos, opened.fmt, records, _drain(skips))

    def _rebase(self, job: Job) -> None:
        """A truncated file: find, without embedding, where its new last chunk starts.

        Chunks before it are unchanged (a chunk only depends on what precedes its end); the
        last one is rebuilt, and the points beyond it are deleted when the file is done.
        """
        s = self.s
        start = last = contract.Cursor()
        n = 0
        fmt = job.state.fmt or s.format
        opened = open_units(job.sf, fmt, pos_of(start), self.opts, Skips(), self.complete_tail(job))
        if opened is not None:
            for ch in chunk_units(opened.units, self.counter, s.chunk_size, s.chunk_overlap):
                last, start = start, cursor_after(ch)
                n += 1
        job.start = last if n else contract.Cursor()
        job.open_start = n > 0
