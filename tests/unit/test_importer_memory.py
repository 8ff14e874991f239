"""Memory sampling and the fault-injection hook (real allocations, no mocks)."""

from __future__ import annotations

from pathlib import Path

from importer.memory import FaultHold, MemorySampler, find_cgroup


def test_sample_is_plausible() -> None:
    m = MemorySampler()
    cur = m.sample()
    assert 10 * 2**20 < cur < m.limit
    assert m.limit > 0


def test_fault_hold_raises_rss_for_real() -> None:
    m = MemorySampler()
    before = m.rss()
    hold = FaultHold(64)
    hold.file_done()
    hold.file_done()
    grown = m.rss() - before
    assert hold.held_bytes == 128 * 2**20
    assert grown > 100 * 2**20, grown  # touched pages are resident
    hold.held.clear()


def test_find_cgroup_reads_proc_file(tmp_path: Path) -> None:
    # a process in the root memory cgroup has no limit: sample RSS instead
    p = tmp_path / "cgroup"
    p.write_text("4:memory:/\n0::/\n")
    assert find_cgroup(str(p)) is None
    assert find_cgroup(str(tmp_path / "missing")) is None
