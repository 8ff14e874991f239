"""Several node agents: names, ports, state dirs, controller flags, and the orphan reaping a
restored agent does (with real processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devcluster import cluster
from devcluster.config import (
    Paths,
    agent_component,
    agent_port,
    node_index,
    node_names,
    ports,
)
from devcluster.nodeagent import orphans


def test_one_node_keeps_the_old_names() -> None:
    assert node_names(1) == ["devnode"]
    assert agent_component("devnode") == "nodeagent"
    assert agent_port(ports(), "devnode") == ports().agent


def test_more_nodes_get_their_own_names_ports_and_state(tmp_path: Path) -> None:
    names = node_names(3)
    assert names == ["devnode", "devnode-1", "devnode-2"]
    pt = ports()
    assert len({agent_port(pt, n) for n in names}) == 3
    assert len({agent_component(n) for n in names}) == 3
    p = Paths(tmp_path)
    dirs = {p.node_pods(n) for n in names}
    assert p.pods in dirs
    assert len(dirs) == 3


@pytest.mark.parametrize("bad", ["node-1", "devnode-0", "devnode-x", "devnode-10", ""])
def test_other_node_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        node_index(bad)
    with pytest.raises(ValueError):
        node_names(0)


def test_node_lifecycle_controller_only_with_several_nodes() -> None:
    assert cluster.lifecycle_flags(False) == ["--controllers=*,-node-lifecycle-controller"]
    multi = cluster.lifecycle_flags(True)
    assert "--controllers=*" in multi
    assert "--node-monitor-grace-period=20s" in multi


def test_parse_procs_skips_junk() -> None:
    assert orphans.parse_procs("12 345\nx y\n\n7\n8 9 10\n") == [(12, "345")]


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )


def test_reap_kills_leftovers_and_tells_gone_from_kept(tmp_path: Path) -> None:
    gone, kept = _sleeper(), _sleeper()
    try:
        orphans.record(tmp_path / "uid-gone", gone.pid)
        orphans.record(tmp_path / "uid-kept", kept.pid)
        (tmp_path / "uid-stale").mkdir()
        (tmp_path / "uid-stale" / orphans.PROCS_FILE).write_text("1 0\n")  # pid 1, not ours
        assert set(orphans.alive(tmp_path)) == {"uid-gone", "uid-kept"}
        reaped = orphans.reap(tmp_path, {"uid-kept"})
        assert reaped.gone == {"uid-gone": [gone.pid]}
        assert reaped.kept == {"uid-kept": [kept.pid]}
        assert gone.wait(10) == -9
        assert kept.wait(10) == -9
        assert orphans.alive(tmp_path) == {}
    finally:
        for proc in (gone, kept):
            proc.kill()
            proc.wait()
