"""The ledger and the counts, without a model or a store: scan results and acknowledgments in,
file states, stale points, the lag, caught-up and the three sets of counts out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from eio_common import contract
from eio_common.contract import Counters, Known
from importer.chunking import Chunk
from importer.counts import Counts
from importer.ledger import ChunkEv, FileEndEv, Ledger
from importer.metrics import Metrics
from importer.scan import Job, Listing, scan
from importer.sources import Pos, SourceFile

NOW = datetime(2026, 1, 1, tzinfo=UTC)


REGISTRIES: dict[int, CollectorRegistry] = {}


@pytest.fixture
def counts() -> Counts:
    registry = CollectorRegistry()
    c = Counts(Counters(), Metrics(registry))
    REGISTRIES[id(c)] = registry
    return c


def _metric(c: Counts, name: str, **labels: str) -> float:
    value = REGISTRIES[id(c)].get_sample_value(f"embedding_importer_{name}", labels)
    return float(value or 0.0)


def _files(tmp_path: Path, *texts: str) -> list[SourceFile]:
    out = []
    for i, t in enumerate(texts):
        p = tmp_path / f"f{i}.txt"
        p.write_text(t)
        out.append(SourceFile(str(p), p.name))
    return out


def _chunk(i: int, end: int) -> Chunk:
    return Chunk(i, f"text {i}", 3, i, i, Pos(end, i + 1, i + 1), i + 1)


def _chunks(job: Job, n: int, records: int = 1) -> list[ChunkEv]:
    per = job.size // n
    job.emitted += n  # as the reader counts them
    return [ChunkEv(job, _chunk(i, per * (i + 1)), "text", f"h{i}", records) for i in range(n)]


def _end(job: Job, records: int = 0) -> FileEndEv:
    return FileEndEv(job, Pos(job.size, 3, 3), "text", records)


def _pass(ledger: Ledger, files: list[SourceFile]) -> Listing:
    listing = scan(files, ledger.states)
    ledger.begin_pass(listing, "keep")
    return listing


def test_states_advance_over_the_acknowledged_prefix_only(tmp_path: Path, counts: Counts) -> None:
    ledger = Ledger({}, counts, synced=True, last_sync=None)
    listing = _pass(ledger, _files(tmp_path, "a\n" * 30, "b\n" * 30))
    assert ledger.synced is False, "new work: no longer caught up"
    a, b = listing.jobs
    evs = [*_chunks(a, 2), _end(a), *_chunks(b, 2), _end(b)]
    work = [ev for ev in evs if ledger.add(ev)]
    assert work == [evs[0], evs[1], evs[3], evs[4]], "chunks are work, file ends are not"
    # the store acknowledges a's second chunk and b's first one first: nothing may advance
    evs[1].acked = evs[3].acked = True
    assert ledger.commit() == ([], 0)
    assert ledger.dirty == {}
    assert counts.counters.chunks == 0
    evs[0].acked = evs[0].embedded = evs[1].embedded = True
    assert ledger.commit() == ([], 1), "a's chunks, a's end, b's first chunk"
    assert set(ledger.dirty) == {"f0.txt", "f1.txt"}
    assert ledger.states["f0.txt"].complete
    assert not b.state.complete
    assert (counts.counters.files, counts.counters.chunks, counts.counters.records) == (1, 2, 3)
    assert ledger.pending.keys() == {"f1.txt"}
    assert ledger.files_done == 1
    ledger.end_pass()
    assert not ledger.caught_up(NOW), "b is still in the ledger"
    evs[4].acked = True
    ledger.commit()
    assert ledger.pending == {}
    assert ledger.caught_up(NOW)
    assert ledger.last_sync == NOW
    assert not ledger.caught_up(NOW), "caught up once: said once"
    _pass(ledger, [])
    assert not ledger.caught_up(NOW), "a new pass is not read yet"
    assert [s.sid for s in ledger.take_dirty()] == ["f0.txt", "f1.txt"]
    assert not ledger.dirty


def test_unchanged_files_make_no_work_and_catching_up_is_immediate(
    tmp_path: Path, counts: Counts
) -> None:
    files = _files(tmp_path, "a\n", "b\n", "c\n")
    ledger = Ledger({}, counts, synced=False, last_sync=None)
    listing = _pass(ledger, files)
    for job in listing.jobs:
        ledger.add(_end(job))
    ledger.commit()
    restarted = Ledger(dict(ledger.states), counts, synced=False, last_sync=None)
    again = _pass(restarted, files)
    assert again.jobs == []
    assert restarted.files_done == 3
    assert not restarted.caught_up(NOW), "the stream has not said the pass is read"
    restarted.end_pass()
    assert restarted.caught_up(NOW), "nothing to do: caught up at the end of the scan"
    synced_before = Ledger(dict(ledger.states), counts, synced=True, last_sync=None)
    _pass(synced_before, files)
    synced_before.end_pass()
    assert synced_before.caught_up(NOW), "the first catch-up of a run is said"
    assert synced_before.last_sync == NOW


def test_a_held_last_line_stays_pending(tmp_path: Path, counts: Counts) -> None:
    ledger = Ledger({}, counts, synced=True, last_sync=None)
    (job,) = _pass(ledger, _files(tmp_path, "whole line\nhalf a li")).jobs
    ledger.add(FileEndEv(job, Pos(11, 1, 1), "text"))
    ledger.commit()
    ledger.end_pass()
    assert ledger.pending == {"f0.txt": (9, job.mtime_ns)}
    lag = ledger.lag()
    assert (lag.files, lag.bytes) == (1, 9)
    assert lag.oldest is not None
    assert not ledger.caught_up(NOW)
    assert ledger.synced is False


def test_a_withheld_last_chunk_keeps_its_file_pending_until_it_is_stored(
    tmp_path: Path, counts: Counts
) -> None:
    """Synced means every change seen is imported, trailing chunks included: while a file's
    last chunk waits for the file to settle, the file is pending (the bytes from that chunk's
    start) and the import is not caught up; once that chunk is stored it is."""
    ledger = Ledger({}, counts, synced=True, last_sync=None)
    (job,) = _pass(ledger, _files(tmp_path, "a\n" * 30)).jobs
    (sealed,) = _chunks(job, 2)[:1]  # chunk 1, the file's last, is withheld by the reader
    job.emitted = 1
    job.withheld = True
    ledger.add(sealed)
    ledger.add(_end(job, records=30))
    sealed.acked = True
    ledger.commit()
    ledger.end_pass()
    assert ledger.pending == {"f0.txt": (30, job.mtime_ns)}  # bytes 30..60: the last chunk
    assert not ledger.caught_up(NOW)
    st = ledger.states["f0.txt"].state()
    assert (st.complete, st.chunks, st.cursor.chunk, st.cursor.offset) == (False, 1, 1, 30)
    # the file settled: the next pass reads the last chunk again, and it is stored
    (again,) = _pass(ledger, _files(tmp_path, "a\n" * 30)).jobs
    assert (again.start.offset, again.start.chunk) == (30, 1)
    last = ChunkEv(again, _chunk(1, 60), "text", "h1")
    again.emitted = 1
    ledger.add(last)
    ledger.add(_end(again))
    last.acked = True
    ledger.commit()
    ledger.end_pass()
    assert ledger.pending == {}
    assert ledger.caught_up(NOW)
    assert ledger.states["f0.txt"].complete
    # the second look only finished the chunk: the file and its records count once
    assert (counts.counters.files, counts.counters.records) == (1, 31)


def test_stale_points_of_a_shorter_rewrite_are_returned(tmp_path: Path, counts: Counts) -> None:
    p = tmp_path / "f.txt"
    sf = SourceFile(str(p), "f.txt")
    p.write_text("x" * 400)
    old = contract.FileState(sid="f.txt", head="0" * 16, head_len=400, size=400, chunks=5)
    old.complete = True
    ledger = Ledger({"f.txt": Known.of(old)}, counts, synced=True, last_sync=None)
    (job,) = scan([sf], ledger.states).jobs
    assert job.change == "rewritten"
    ledger.begin_pass(Listing([sf], [job], []), "keep")
    for ev in [*_chunks(job, 2), _end(job)]:
        ledger.add(ev)
        ev.acked = True
    stale, files = ledger.commit()
    assert stale == [contract.point_id("f.txt", i) for i in (2, 3, 4)]
    assert files == 1
    assert counts.counters.deleted == 3
    assert counts.run.points_deleted == 3
    assert counts.run.changes == {"rewritten": 1}
    assert _metric(counts, "points_deleted_total") == 3
    assert _metric(counts, "source_changes_total", kind="rewritten") == 1


def test_deleted_files_are_kept_or_forgotten(tmp_path: Path, counts: Counts) -> None:
    st = contract.FileState(sid="gone.txt", head="0" * 16, size=4, chunks=2, complete=True)
    keep = Ledger({"gone.txt": Known.of(st)}, counts, synced=True, last_sync=None)
    listing = Listing([], [], ["gone.txt"])
    assert [(g.sid, g.chunks, g.delete) for g in keep.begin_pass(listing, "keep")] == [
        ("gone.txt", 2, False)
    ]
    assert keep.begin_pass(listing, "keep") == [], "said once"
    assert "gone.txt" in keep.states
    assert counts.counters.deleted == 0
    drop = Ledger({"gone.txt": Known.of(st)}, counts, synced=True, last_sync=None)
    assert [g.delete for g in drop.begin_pass(listing, "delete")] == [True]
    assert drop.states == {}
    assert counts.counters.deleted == 2
    assert counts.run.changes == {"deleted": 1}


def test_counts_feed_checkpoint_report_and_metrics(counts: Counts) -> None:
    counts.records(4)
    counts.skipped({"empty": 2, "binary": 1})
    counts.skipped({"empty": 1})
    counts.upserted(8)
    counts.committed_chunk(True)
    counts.committed_chunk(False)
    counts.change("appended")
    counts.file_done()
    counts.memory(300)
    counts.memory(200)
    c, r = counts.counters, counts.run
    assert (c.records, r.records, _metric(counts, "records_total")) == (4, 4, 4)
    assert c.skipped == r.skipped == {"empty": 3, "binary": 1}
    assert _metric(counts, "skipped_total", reason="empty") == 3
    assert (r.chunks_embedded, r.points_upserted, _metric(counts, "chunks_total")) == (8, 8, 8)
    assert (c.chunks, c.points) == (1, 1), "the checkpoint counts what the states cover"
    assert (c.files, r.files_done, _metric(counts, "files_total")) == (1, 1, 1)
    assert (c.deleted, r.changes) == (0, {"appended": 1})
    assert (r.peak_memory_bytes, _metric(counts, "memory_bytes")) == (300, 200)
