"""The ledger: scan results and acknowledged writes in; file-state changes and the next work out.

Every event of the stream (a chunk, the end of a file) enters the ledger in stream order. A
chunk is *acknowledged* once the store acknowledged its point (or, for an unchanged last chunk,
once it is known that nothing needs storing). File states only ever advance over the longest
acknowledged prefix of the ledger (``commit``), so whatever stops the process, the saved states
describe a point from which a restart reproduces the same chunks, point IDs and vectors.

The ledger also knows what the last scan found and what of it is still pending (the lag), and
so whether the importer has caught up. It does no I/O: the caller deletes the stale points it
returns, saves the dirty states and logs what it reports.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eio_common import contract
from eio_common.contract import FileState, Known, Lag
from importer.chunking import Chunk
from importer.counts import Counts
from importer.scan import Job, Listing, acked, finish


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


@dataclass
class Gone:
    """A file that disappeared from the source: its points kept, or to be deleted."""

    sid: str
    chunks: int
    delete: bool


class Ledger:
    def __init__(
        self, states: dict[str, Known], counts: Counts, synced: bool, last_sync: datetime | None
    ) -> None:
        self.states = states  # files read before (compact)
        self.counts = counts
        self.events: collections.deque[Event] = collections.deque()
        self.dirty: dict[str, FileState] = {}  # states changed since the last save
        self.pending: dict[str, tuple[int, int]] = {}  # sid -> (bytes, mtime_ns) not yet read
        self.gone_kept: set[str] = set()
        self.files_total = 0
        self.synced = synced
        self.last_sync = last_sync
        self.pass_read = False  # every event of the current pass entered the ledger
        self.said_caught_up = False  # in this run

    # -- scan results in -------------------------------------------------------------------
    def begin_pass(self, listing: Listing, on_delete: str) -> list[Gone]:
        """A new scan: its jobs are now pending; returns the files that disappeared (new to
        this run, or to be deleted), whose states (with ``delete``) are dropped here."""
        self.files_total = len(listing.files)
        self.pass_read = False
        self.counts.listed(self.files_total)
        if listing.vanished:
            self.counts.skipped({"vanished": listing.vanished})
        gone = self._forget(listing.gone, on_delete)
        self.pending = {j.sid: (max(0, j.size - j.floor), j.mtime_ns) for j in listing.jobs}
        if listing.jobs:
            self.synced = False
        return gone

    def _forget(self, sids: list[str], on_delete: str) -> list[Gone]:
        if on_delete == "keep":
            new = [s for s in sids if s not in self.gone_kept]
            self.gone_kept.update(new)
            return [Gone(s, self.states[s].chunks, False) for s in new]
        out = []
        for sid in sids:
            st = self.states.pop(sid)
            self.dirty.pop(sid, None)
            self.counts.change("deleted", st.chunks)
            out.append(Gone(sid, st.chunks, True))
        return out

    def end_pass(self) -> None:
        """The stream read the pass to its end: once the ledger has committed every event and
        nothing is pending, the importer has caught up (see ``caught_up``)."""
        self.pass_read = True

    # -- events in, work out ---------------------------------------------------------------
    def add(self, ev: Event) -> bool:
        """Enter an event; True if it is work (a chunk to embed and store)."""
        self.events.append(ev)
        return isinstance(ev, ChunkEv) and not ev.acked

    # -- acknowledged writes in, file-state changes out -------------------------------------
    def commit(self) -> tuple[list[str], int]:
        """Apply the acknowledged prefix to the file states and the counts; returns the IDs of
        the points now stale (to delete) and the number of files finished."""
        stale: list[str] = []
        files = 0
        while self.events and self.events[0].acked:
            ev = self.events.popleft()
            self.counts.records(ev.records)
            self.counts.skipped(ev.skipped)
            job = ev.job
            if isinstance(ev, ChunkEv):
                acked(job, ev.chunk, ev.hash)
                self.counts.committed_chunk(ev.embedded)
            else:
                gone, done = self._file_done(job, ev)
                stale += [contract.point_id(job.sid, i) for i in gone]
                files += done
            self.dirty[job.sid] = job.state
        return stale, files

    def _file_done(self, job: Job, ev: FileEndEv) -> tuple[range, bool]:
        stale = finish(job, ev.end, ev.fmt)
        self.states[job.sid] = Known.of(job.state)
        held = job.size - job.state.size  # a last line still being written
        if job.withheld:  # ... and a last chunk that waits for the file to settle
            held = job.size - job.state.cursor.offset
        if held > 0 and ev.end is not None:
            self.pending[job.sid] = (held, job.mtime_ns)
        else:
            self.pending.pop(job.sid, None)
        if not job.consumed and not stale:
            return stale, False  # looked again at a last line still being written
        self.counts.change(job.change, len(stale))
        self.counts.file_done()
        return stale, True

    def take_dirty(self) -> list[FileState]:
        out = list(self.dirty.values())
        self.dirty.clear()
        return out

    # -- where the import stands ------------------------------------------------------------
    def caught_up(self, now: datetime) -> bool:
        """Whether everything the last pass found is imported (lines still being written
        wait), decided by the work: the pass read to its end and every event committed. Sets
        ``synced``; True when this is the first catch-up of the run, or a new one."""
        if not self.pass_read or self.events:
            return False
        if self.pending:
            self.synced = False
            return False
        newly = not self.synced or not self.said_caught_up
        self.synced, self.last_sync, self.said_caught_up = True, now, True
        return newly

    @property
    def files_done(self) -> int:
        return max(0, self.files_total - len(self.pending))

    def lag(self) -> Lag:
        if not self.pending:
            return Lag()
        oldest = min(m for _, m in self.pending.values())
        return Lag(
            files=len(self.pending),
            bytes=sum(b for b, _ in self.pending.values()),
            oldest=datetime.fromtimestamp(oldest / 1e9, UTC),
        )
