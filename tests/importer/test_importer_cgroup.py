"""In a real memory cgroup with a limit (v1 here, as pods on the dev cluster): the importer
measures the cgroup, a % threshold is of the cgroup's limit, and it exits 75 there."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import Workspace, env_with, make_corpus

from devcluster.testing import wait_for
from eio_common.contract import Checkpoint


def _remove_cgroup(cg: Path) -> None:
    """rmdir the test's cgroup once its last process is gone (it may take a moment)."""

    def removed() -> bool:
        try:
            cg.rmdir()
        except OSError:
            return False
        return True

    wait_for(removed, 5, f"cgroup {cg} removed", interval=0.1)


def _own_memory_cgroup() -> Path | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, rel = line.split(":", 2)
            if "memory" in controllers.split(","):
                p = Path("/sys/fs/cgroup/memory") / rel.lstrip("/")
                return p if (p / "memory.limit_in_bytes").exists() else None
    except OSError:
        return None
    return None


@pytest.mark.reliability
def test_percent_threshold_of_a_cgroup_limit(tmp_path: Path) -> None:
    parent = _own_memory_cgroup()
    if parent is None or not os.access(parent, os.W_OK):
        pytest.skip("no writable cgroup v1 memory controller")
    cg = parent / f"importer-test-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    try:
        (cg / "memory.limit_in_bytes").write_text(str(900 * 2**20))
        ws = Workspace(tmp_path, make_corpus(tmp_path))
        args = ws.args("--memory-threshold", "70%", "--batch-size", "8")
        script = f'echo $$ > {cg}/cgroup.procs && exec "$@"'
        r = subprocess.run(
            ["sh", "-c", script, "sh", *args],
            capture_output=True,
            text=True,
            env=env_with({"IMPORTER_FAULT_HOLD_MB_PER_FILE": "120"}),
            timeout=600,
        )
        assert r.returncode == 75, r.stderr[-3000:]
        assert "memory from cgroup v1" in r.stderr
        assert "threshold 70% (630 MiB)" in r.stderr
        cp = Checkpoint.from_json(ws.checkpoint.read_text())
        assert cp.last_exit == "threshold"
        assert cp.peak_memory_bytes >= 630 * 2**20
        assert cp.peak_memory_bytes < 900 * 2**20
    finally:
        _remove_cgroup(cg)


@pytest.mark.reliability
def test_page_cache_of_a_store_larger_than_the_threshold_does_not_roll(tmp_path: Path) -> None:
    """The embedded store's files are read into page cache charged to the importer's cgroup,
    more of it than the threshold: the importer measures anonymous memory and does not roll."""
    parent = _own_memory_cgroup()
    if parent is None or not os.access(parent, os.W_OK):
        pytest.skip("no writable cgroup v1 memory controller")
    ws = Workspace(tmp_path, make_corpus(tmp_path))
    _prefill(ws.qdrant, 250_000)  # ~400 MB of vector and payload files
    store_bytes = sum(f.stat().st_size for f in ws.qdrant.rglob("*") if f.is_file())
    threshold = 400 * 2**20
    assert store_bytes > threshold
    cg = parent / f"importer-test-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    try:
        (cg / "memory.limit_in_bytes").write_text(str(3 * 2**30))
        files = [str(f) for f in ws.qdrant.rglob("*") if f.is_file()]
        # read twice inside the cgroup: the pages are charged to it and become active
        warm = 'echo $$ > {cg}/cgroup.procs && cat "$@" > /dev/null && cat "$@" > /dev/null'
        subprocess.run(["sh", "-c", warm.format(cg=cg), "sh", *files], check=True, timeout=300)
        stat = _memory_stat(cg)
        assert stat["total_cache"] > threshold, stat  # the page cache really is there
        args = ws.args("--memory-threshold", "400Mi", "--batch-size", "8")
        script = f'echo $$ > {cg}/cgroup.procs && exec "$@"'
        r = subprocess.run(
            ["sh", "-c", script, "sh", *args],
            capture_output=True,
            text=True,
            env=env_with(None),
            timeout=600,
        )
        usage = int((cg / "memory.max_usage_in_bytes").read_text())
    finally:
        _remove_cgroup(cg)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(anonymous)" in r.stderr
    cp = Checkpoint.from_json(ws.checkpoint.read_text())
    assert cp.last_exit == "complete"
    assert cp.peak_memory_bytes < threshold  # what the importer measured ...
    assert usage > threshold  # ... while the cgroup's usage, page cache included, was above


def _prefill(store: Path, n: int) -> None:
    import numpy as np

    from importer.sink import EdgeSink

    rng = np.random.default_rng(3)
    sink = EdgeSink(str(store), "test", True, 384)
    for start in range(0, n, 2000):
        vecs = rng.standard_normal((2000, 384), dtype=np.float32)
        ids = [str(uuid.UUID(int=start + i + 1)) for i in range(2000)]
        sink.upsert(ids, vecs.tolist(), [{"text": "p" * 200}] * 2000)
    sink.sync()
    sink.close()


def _memory_stat(cg: Path) -> dict[str, int]:
    out = {}
    for line in (cg / "memory.stat").read_text().splitlines():
        k, v = line.split()
        out[k] = int(v)
    return out
