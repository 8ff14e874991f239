"""Which files need work: every row of importer.scan's table, on real files, no model."""

from __future__ import annotations

import os
from pathlib import Path

from eio_common.contract import Cursor, FileState, Known, head_hash
from importer.chunking import Chunk
from importer.payload import chunk_payload, project_of
from importer.scan import Job, acked, finish, plan, scan
from importer.sources import Pos, SourceFile


def _sf(p: Path) -> SourceFile:
    return SourceFile(str(p), p.name)


def _state_after_full_read(p: Path, chunks: int = 3) -> FileState:
    data = p.read_bytes()
    st = os.stat(p)
    return FileState(
        sid=p.name,
        head=head_hash(data[:1024]),
        head_len=min(len(data), 1024),
        size=len(data),
        mtime_ns=st.st_mtime_ns,
        chunks=chunks,
        cursor=Cursor(offset=10, line=1, record=1, chunk=2),
        tail="t" * 16,
        complete=True,
    )


def _plan(p: Path, prev: FileState | None):  # type: ignore[no-untyped-def]
    st = os.stat(p)
    return plan(_sf(p), st.st_size, st.st_mtime_ns, prev)


def test_new_file_is_read_from_the_start(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text("line\n")
    job = _plan(p, None)
    assert job is not None
    assert job.change == "new"
    assert job.start == Cursor()
    assert job.state.head == head_hash(b"line\n")


def test_unchanged_file_needs_nothing(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text("line one\nline two\n")
    assert _plan(p, _state_after_full_read(p)) is None


def test_touched_file_with_the_same_content_needs_nothing(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text("line one\n")
    prev = _state_after_full_read(p)
    os.utime(p, ns=(prev.mtime_ns + 10**9, prev.mtime_ns + 10**9))
    assert _plan(p, prev) is None
    assert prev.mtime_ns == os.stat(p).st_mtime_ns  # remembered: the head is not read again


def test_appended_file_goes_on_from_its_last_chunk(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text("line one\nline two\n")
    prev = _state_after_full_read(p)
    with p.open("a") as f:
        f.write("line three\n")
    job = _plan(p, prev)
    assert job is not None
    assert job.change == "appended"
    assert job.start == prev.cursor  # the start of the last chunk, which may grow
    assert (job.keep_chunk, job.keep_hash, job.open_start) == (2, prev.tail, True)
    assert job.floor == prev.size  # records before were counted already


def test_file_read_in_part_resumes_at_its_cursor(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text("line one\nline two\n")
    prev = _state_after_full_read(p)
    prev.complete = False
    prev.size = 0
    job = _plan(p, prev)
    assert job is not None
    assert job.change == "appended"
    assert job.start == prev.cursor
    assert job.keep_chunk == -1


def test_rewritten_file_starts_over_and_remembers_its_old_chunks(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text("line one\nline two\n")
    prev = _state_after_full_read(p, chunks=7)
    p.write_text("something else entirely\n")
    job = _plan(p, prev)
    assert job is not None
    assert job.change == "rewritten"
    assert job.start == Cursor()
    assert job.state.chunks == 7


def test_truncated_file_with_its_head_intact(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text("x" * 2000 + "\n" + "y" * 100 + "\n")
    prev = _state_after_full_read(p)
    p.write_text("x" * 2000 + "\n")
    job = _plan(p, prev)
    assert job is not None
    assert job.change == "truncated"
    assert job.floor == p.stat().st_size


def test_deleted_files_are_listed_as_gone(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text("line\n")
    states = {
        "a.jsonl": Known.of(_state_after_full_read(p)),
        "gone.jsonl": Known.of(FileState(sid="gone.jsonl")),
    }
    listing = scan([_sf(p)], states)
    assert listing.gone == ["gone.jsonl"]
    assert listing.jobs == []


def _chunk(index: int, resume: Pos, text: str = "t") -> Chunk:
    return Chunk(index, text, 1, 0, 0, resume, index + 1)


def test_state_follows_acknowledged_chunks_and_rests_at_the_last_chunk(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text("a\nb\nc\n")
    job = _plan(p, None)
    assert job is not None
    acked(job, _chunk(0, Pos(2, 1, 1)), "h0")
    job.emitted += 1
    assert job.state.cursor == Cursor(offset=2, line=1, record=1, chunk=1)
    assert not job.state.complete
    acked(job, _chunk(1, Pos(6, 3, 3)), "h1")
    job.emitted += 1
    stale = finish(job, Pos(6, 3, 3), "jsonl")
    assert list(stale) == []
    st = job.state
    # read again from the start of the last chunk, which appended lines may extend
    assert (st.cursor, st.chunks, st.tail, st.size, st.complete) == (
        Cursor(offset=2, line=1, record=1, chunk=1),
        2,
        "h1",
        6,
        True,
    )


def _rewritten_with_one_chunk_acked(p: Path, text: str) -> Job:
    """``p`` read whole at 5 chunks, then rewritten to ``text``; its first chunk acknowledged."""
    p.write_text("a\n")
    prev = _state_after_full_read(p, chunks=5)
    p.write_text(text)
    job = _plan(p, prev)
    assert job is not None
    assert job.change == "rewritten"
    acked(job, _chunk(0, Pos(2, 1, 1)), "h")
    job.emitted += 1
    return job


def test_finish_reports_points_beyond_the_new_end_as_stale(tmp_path: Path) -> None:
    job = _rewritten_with_one_chunk_acked(tmp_path / "a.jsonl", "b\n")
    assert list(finish(job, Pos(2, 1, 1), "jsonl")) == [1, 2, 3, 4]
    assert job.state.chunks == 1


def test_payload_fields_for_filtering() -> None:
    assert project_of("-home-me-src-app/abc.jsonl") == "-home-me-src-app"
    assert project_of("projects/-home-me-src-app/abc.jsonl") == "-home-me-src-app"
    assert project_of("abc.jsonl") is None
    c = Chunk(
        3,
        "user: hi",
        2,
        0,
        1,
        Pos(),
        4,
        roles=["user", "assistant"],
        session="S",
        times=["2026-12-02T00:00:00Z", "2026-12-01T00:00:00Z"],
    )
    p = chunk_payload("proj/abc.jsonl", c, "claude")
    assert p == {
        "text": "user: hi",
        "source": "proj/abc.jsonl",
        "chunk_index": 3,
        "format": "claude",
        "role": "mixed",
        "roles": ["user", "assistant"],
        "session": "S",
        "project": "proj",
        "time_from": "2026-12-01T00:00:00Z",
        "time_to": "2026-12-02T00:00:00Z",
    }


def test_a_scan_remembers_a_touched_file_without_reading_it_again(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text("line one\n")
    prev = _state_after_full_read(p)
    known = {"a.jsonl": Known.of(prev)}
    assert scan([_sf(p)], known).jobs == []
    os.utime(p, ns=(prev.mtime_ns + 10**9, prev.mtime_ns + 10**9))
    assert scan([_sf(p)], known).jobs == []
    assert known["a.jsonl"].mtime_ns == prev.mtime_ns + 10**9
    assert known["a.jsonl"].unchanged(p.stat().st_size, p.stat().st_mtime_ns)


def test_a_withheld_last_chunk_leaves_the_file_unfinished_at_its_start(tmp_path: Path) -> None:
    """Following a file still being written: its sealed chunks are stored, its last chunk is
    withheld. The state says the file was read only up to that chunk, so the next scan (or a
    restart) reads it again, and stays consistent for ``verify``."""
    p = tmp_path / "a.jsonl"
    p.write_text("a\nb\nc\n")
    job = _plan(p, None)
    assert job is not None
    acked(job, _chunk(0, Pos(2, 1, 1)), "h0")
    job.emitted += 1
    job.withheld = True  # chunk 1 (from offset 2) was not embedded
    assert list(finish(job, Pos(6, 3, 3), "jsonl")) == []
    st = job.state
    assert (st.cursor, st.chunks, st.size, st.complete) == (
        Cursor(offset=2, line=1, record=1, chunk=1),
        1,
        6,
        False,
    )
    assert not Known.of(st).unchanged(6, st.mtime_ns)  # every scan looks at it again
    again = _plan(p, st)
    assert again is not None
    assert (again.change, again.start, again.floor, again.keep_chunk) == (
        "appended",
        st.cursor,
        6,
        -1,
    )


def test_a_withheld_chunk_keeps_its_older_point_and_drops_the_ones_beyond(tmp_path: Path) -> None:
    job = _rewritten_with_one_chunk_acked(tmp_path / "a.jsonl", "b\nc\n")
    job.withheld = True  # chunk 1 waits; point 1 still holds the older text
    assert list(finish(job, Pos(4, 2, 2), "jsonl")) == [2, 3, 4]
    assert (job.state.chunks, job.state.cursor.chunk) == (2, 1)
