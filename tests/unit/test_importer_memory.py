"""Memory sampling and the fault-injection hook (real allocations, no mocks)."""

from __future__ import annotations

from pathlib import Path

from devcluster import cgroups
from eio_common.cgroup import find_cgroup, parse_proc_cgroup, v2_mount
from importer.memory import FaultHold, MemorySampler


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


def test_parse_proc_cgroup() -> None:
    v1 = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n"
    assert parse_proc_cgroup(v1) == ("/process_api/abc", "/")
    assert parse_proc_cgroup("5:cpu,memory:/a\n") == ("/a", None)
    v2 = "0::/user.slice/session-1.scope\n"
    assert parse_proc_cgroup(v2) == (None, "/user.slice/session-1.scope")
    # a v1 named hierarchy without controllers is not the v2 line
    assert parse_proc_cgroup("1:name=systemd:/x\n3::/not-v2\n") == (None, None)
    assert parse_proc_cgroup("garbage\n") == (None, None)


def test_v2_mount_prefers_the_hybrid_unified_mount(tmp_path: Path) -> None:
    assert v2_mount(tmp_path) is None  # v1 only
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    assert v2_mount(tmp_path) == tmp_path  # pure v2
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("")
    assert v2_mount(tmp_path) == tmp_path / "unified"  # hybrid


def test_the_node_agent_reads_cgroups_with_the_importers_reader() -> None:
    assert cgroups.parse_proc_cgroup is parse_proc_cgroup
    assert cgroups.v2_mount is v2_mount
