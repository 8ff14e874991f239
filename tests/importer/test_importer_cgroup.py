"""In a real memory cgroup with a limit (v1 here, as pods on the dev cluster): the importer
measures the cgroup, a % threshold is of the cgroup's limit, and it exits 75 there."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import Workspace, env_with, make_corpus

from importer.contract import Checkpoint


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
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)
