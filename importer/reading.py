"""Reading one file's job into ledger events: its chunks from the job's start, then its end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from eio_common import contract
from importer.chunking import TokenCounter, chunk_units
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
        """Read a last line without its newline? One-shot: yes, the file is what it is now
        (if a writer was mid-line, the next run reads that line again from the start of the
        file's last chunk). Following: only once the file has not changed for settle_seconds;
        until then it waits for its newline."""
        return not self.s.follow or time.time() - job.mtime_ns / 1e9 >= self.s.settle_seconds

    def held_settled(self) -> bool:
        """A held last line stopped changing: time to read it."""
        return bool(self.held) and time.time() >= (
            max(self.held.values()) / 1e9 + self.s.settle_seconds
        )

    def events(self, job: Job) -> Iterator[Event]:
        """Chunk events of one file from its job's start, then its end event."""
        s = self.s
        if job.change == "truncated":
            self._rebase(job)
        job.state.cursor = job.start
        skips = Skips()
        skips.floor = job.floor
        fmt = job.state.fmt or s.format
        opened = open_units(
            job.sf, fmt, pos_of(job.start), self.opts, skips, self.complete_tail(job)
        )
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
        for ch in chunk_units(
            counted(opened.units), self.counter, s.chunk_size, s.chunk_overlap, c.chunk, c.piece
        ):
            h = contract.text_hash(ch.text)
            keep = ch.chunk_index == job.keep_chunk and h == job.keep_hash
            job.emitted += 1
            yield ChunkEv(job, ch, opened.fmt, h, records, _drain(skips), acked=keep)
            records = 0
        if opened.reader.pos.offset < job.size:
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
