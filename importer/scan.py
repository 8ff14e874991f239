"""Which files need work: compare a source listing with the per-file states.

Pure decisions over ``os.stat`` facts and a file's head, so that tests can cover every case
without a model or a store:

- no state: ``new``, read from the start;
- head fingerprint differs (or the file is shorter than its fingerprint): ``rewritten``, read
  from the start, points beyond the new end deleted;
- shorter than what was read, head intact: ``truncated``, the new last chunk rebuilt, points
  beyond it deleted;
- same size and mtime as when it was read to its end: nothing to do;
- longer, or read only in part: ``appended``, read on from the cursor; the last chunk is
  embedded again only if its text changed;
- gone from the listing: its points kept, or deleted with ``on_delete=delete``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from eio_common.contract import HEAD_BYTES, Cursor, FileState, Known, head_hash
from importer.chunking import Chunk
from importer.sources import Pos, SourceFile, read_head

Change = Literal["new", "appended", "truncated", "rewritten"]


@dataclass
class Job:
    """Work on one file in this run. ``state`` is updated as the store acknowledges chunks."""

    sf: SourceFile
    change: Change
    size: int  # bytes in the file when it was listed
    mtime_ns: int
    state: FileState
    start: Cursor  # where reading starts
    floor: int = 0  # records and skips before this byte offset were counted by earlier runs
    keep_chunk: int = -1  # this chunk index is not embedded again if its text hash ...
    keep_hash: str = ""  # ... equals this (the last chunk of a file read to its end)
    open_start: bool = False  # ``start`` is the start of an existing chunk, not after one
    emitted: int = 0  # chunks produced in this run
    consumed: bool = False  # new bytes were read (not only the last chunk looked at again)
    withheld: bool = False  # its unsealed last chunk waits for the file to settle

    @property
    def sid(self) -> str:
        return self.sf.source_id


def pos_of(c: Cursor) -> Pos:
    return Pos(c.offset, c.line, c.record)


def cursor_after(chunk: Chunk) -> Cursor:
    r = chunk.resume
    return Cursor(
        offset=r.offset,
        line=r.line,
        record=r.record,
        chunk=chunk.resume_chunk,
        piece=chunk.resume_piece,
    )


def fingerprint(path: str, state: FileState | None) -> tuple[bytes, bool] | None:
    """(head bytes now, whether ``state``'s fingerprint still matches), None if gone."""
    head = read_head(path, HEAD_BYTES)
    if head is None:
        return None
    if state is None:
        return head, False
    ok = len(head) >= state.head_len and head_hash(head[: state.head_len]) == state.head
    return head, ok


def plan(sf: SourceFile, size: int, mtime_ns: int, prev: FileState | None) -> Job | None:
    """The job for one listed file, or None if nothing changed (or it vanished)."""
    if prev is not None and prev.complete and size == prev.size and mtime_ns == prev.mtime_ns:
        return None
    fp = fingerprint(sf.path, prev)
    if fp is None:
        return None
    head, head_ok = fp
    fresh = FileState(sid=sf.source_id, head=head_hash(head), head_len=len(head))
    if prev is None or not head_ok:
        # a rewrite keeps the old chunk count, so the points beyond the new end are deleted
        fresh.chunks = prev.chunks if prev is not None else 0
        return Job(sf, "new" if prev is None else "rewritten", size, mtime_ns, fresh, Cursor())
    state = prev.model_copy(update={"head": fresh.head, "head_len": fresh.head_len})
    read_to = prev.size if prev.complete else prev.cursor.offset
    if size < read_to:
        return Job(sf, "truncated", size, mtime_ns, state, Cursor(), floor=size)
    if prev.complete and size == prev.size:
        prev.mtime_ns = mtime_ns  # touched, same content: remember, so it is not read again
        return None
    job = Job(sf, "appended", size, mtime_ns, state, prev.cursor, floor=max(prev.size, 0))
    if prev.complete and prev.chunks:
        job.keep_chunk, job.keep_hash, job.open_start = prev.cursor.chunk, prev.tail, True
    return job


@dataclass
class Listing:
    """A shard's files now, and the jobs and deletions that follow from the states."""

    files: list[SourceFile]
    jobs: list[Job]
    gone: list[str]  # source ids with a state but no file
    vanished: int = 0  # listed, but deleted before they could be looked at


def scan(files: list[SourceFile], known: dict[str, Known]) -> Listing:
    """Jobs for the listed files against the known states (updated in place for files that
    were only touched, so their heads are not read again)."""
    jobs: list[Job] = []
    vanished = 0
    for sf in files:
        try:
            st = os.stat(sf.path)
        except OSError:
            vanished += 1  # deleted since the listing: the next scan sees it gone
            continue
        k = known.get(sf.source_id)
        if k is not None and k.unchanged(st.st_size, st.st_mtime_ns):
            continue  # the common case of a scan: no parsing, no reading
        prev = k.state() if k is not None else None
        job = plan(sf, st.st_size, st.st_mtime_ns, prev)
        if job is not None:
            jobs.append(job)
        elif prev is not None and prev.mtime_ns != (k.mtime_ns if k else 0):
            known[sf.source_id] = Known.of(prev)
    listed = {f.source_id for f in files}
    return Listing(files, jobs, sorted(s for s in known if s not in listed), vanished)


def finish(job: Job, end: Pos | None, fmt: str) -> range:
    """Close a job whose file was read to ``end`` (None: skipped as a whole, e.g. binary);
    returns the chunk indices whose points are now stale (beyond the file's new end)."""
    st = job.state
    if job.withheld and end is not None:
        return _withheld(job, end, fmt)
    if job.emitted:
        total = st.cursor.chunk
        st.cursor = st.last  # the last chunk may still grow: read again from its start
    else:
        total = job.start.chunk + (1 if job.open_start else 0)
    stale = range(total, st.chunks)
    st.chunks = total
    if end is not None:
        st.size = end.offset
        if total == 0:  # nothing to rebuild: go on after what was read
            record = end.record if fmt == "text" else end.line  # JSON: a record is a line
            st.cursor = Cursor(offset=end.offset, line=end.line, record=record)
    else:
        st.size = job.size
    job.consumed = job.consumed or st.size > job.floor or job.change != "appended"
    st.mtime_ns, st.fmt, st.complete = job.mtime_ns, fmt or st.fmt, True
    return stale


def _withheld(job: Job, end: Pos, fmt: str) -> range:
    """Close a job whose unsealed last chunk was withheld: the state stays unfinished, its
    cursor at the start of that chunk (just after the last stored one), so the next scan or a
    restart reads it again; returns the chunk indices beyond it, now stale. Its own point, if
    an earlier read stored one, keeps the older text until it is replaced."""
    st = job.state
    k = st.cursor.chunk  # the withheld chunk's index
    total = max(k, min(st.chunks, k + 1))
    stale = range(total, st.chunks)
    st.chunks, st.size, st.complete = total, end.offset, False
    job.consumed = job.consumed or st.size > job.floor or job.change != "appended"
    st.mtime_ns, st.fmt = job.mtime_ns, fmt or st.fmt
    return stale


def acked(job: Job, chunk: Chunk, text_hash: str) -> None:
    """The store acknowledged ``chunk`` of ``job``'s file (or it needed no embedding)."""
    st = job.state
    st.last = st.cursor
    st.cursor = cursor_after(chunk)
    st.chunks = max(st.chunks, chunk.chunk_index + 1)
    st.tail = text_hash
    st.complete = False
