"""The container launcher and memory cgroups, without a cluster (needs root and a writable
memory cgroup; skipped otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster import cgroups
from devcluster.nodeagent.containers import LAUNCHER, hide_for_nonroot

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, cgroups)")


@pytest.fixture
def manager() -> Iterator[cgroups.CgroupManager]:
    mgr, why = cgroups.detect(None)
    if mgr is None:
        pytest.skip(f"no writable memory cgroup: {why}")
    yield mgr
    mgr.cleanup()


def launch(tmp_path: Path, **spec: Any) -> subprocess.CompletedProcess[str]:
    full = {
        "env": {"PATH": "/usr/bin:/bin"},
        "cwd": "/",
        "mounts": [],
        "hide": [],
        "readOnlyRoot": False,
        "uid": None,
        "gid": None,
        "groups": [],
        "noNewPrivs": False,
        "cgroupProcs": None,
        **spec,
    }
    f = tmp_path / "spec.json"
    f.write_text(json.dumps(full))
    return subprocess.run(
        [sys.executable, "-I", "-S", LAUNCHER, str(f)],
        capture_output=True,
        text=True,
        timeout=60,
        env={},
    )


def test_memory_limit_oom_kill_is_recorded(tmp_path: Path, manager: cgroups.CgroupManager) -> None:
    cg = manager.create("oomtest", 48 << 20)
    hog = "x = [bytearray(1 << 20) for _ in range(300)]; print('survived')"
    res = launch(tmp_path, argv=[sys.executable, "-c", hog], cgroupProcs=str(cg.procs_file))
    assert res.returncode == -9
    assert "survived" not in res.stdout
    assert cg.oom_kills() >= 1
    cg.remove()
    assert not cg.path.exists()


def test_under_the_limit_no_oom(tmp_path: Path, manager: cgroups.CgroupManager) -> None:
    cg = manager.create("fine", 128 << 20)
    script = (
        f"import pathlib; m = pathlib.Path({str(cg.mount_target)!r}); "
        "v1 = m / 'memory.limit_in_bytes'; "
        "print(int((v1 if v1.exists() else m / 'memory.max').read_text())); "
        "print([ln for ln in open('/proc/self/cgroup') if 'memory' in ln or ln.startswith('0::')])"
    )
    res = launch(
        tmp_path,
        argv=[sys.executable, "-c", script],
        cgroupProcs=str(cg.procs_file),
        cgroupDir=str(cg.path),
        cgroupMount=str(cg.mount_target),
    )
    assert res.returncode == 0, res.stderr
    limit, lines = res.stdout.strip().splitlines()
    # the container sees its own cgroup (cgroup namespace + bind mount), like in a container
    assert int(limit) == 128 << 20
    assert ":/\\n" in lines
    assert cg.oom_kills() == 0
    cg.remove()


def test_mounts_read_only_root_and_user(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("content")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    scratch.chmod(0o777)
    target = f"/tmp/eio-launcher-test-{os.getpid()}"
    script = f"""
import json, os
out = {{"uid": os.getuid(), "read": open("{target}/ro/f").read()}}
for p in ("{target}/ro/new", "/var/eio-launcher-should-fail", "{target}/rw/new"):
    try:
        open(p, "w").write("x"); out[p] = "rw"
    except OSError:
        out[p] = "ro"
print(json.dumps(out))
"""
    res = launch(
        tmp_path,
        argv=[sys.executable, "-c", script],
        mounts=[
            {"source": str(src), "target": f"{target}/ro", "readOnly": True, "isFile": False},
            {"source": str(scratch), "target": f"{target}/rw", "readOnly": False},
        ],
        readOnlyRoot=True,
        uid=1000,
        gid=1000,
        hide=hide_for_nonroot(),
        noNewPrivs=True,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["uid"] == 1000
    assert out["read"] == "content"
    assert out[f"{target}/ro/new"] == "ro"
    assert out["/var/eio-launcher-should-fail"] == "ro"
    assert out[f"{target}/rw/new"] == "rw"
    assert (scratch / "new").read_text() == "x"
    # the mounts lived only in the container's namespace
    assert not Path(f"{target}/ro/f").exists()
    subprocess.run(["rm", "-rf", target], check=False)


def test_start_failure_exits_128(tmp_path: Path) -> None:
    res = launch(tmp_path, argv=["/nonexistent/binary"])
    assert res.returncode == 128
    assert "container start failed" in res.stderr


def test_runtime_paths_stay_visible_under_a_volume(tmp_path: Path) -> None:
    # An emptyDir at /tmp over a checkout in /tmp must not hide the venv the entry point is in.
    parent = tmp_path / "parent"
    runtime = parent / "venv"
    runtime.mkdir(parents=True)
    (runtime / "marker").write_text("runtime")
    empty = tmp_path / "emptydir"
    empty.mkdir()
    script = f"""
import os
print(open("{runtime}/marker").read() if os.path.exists("{runtime}/marker") else "hidden")
"""
    mounts = [{"source": str(empty), "target": str(parent), "readOnly": False}]
    hidden = launch(tmp_path, argv=[sys.executable, "-c", script], mounts=mounts)
    shown = launch(
        tmp_path, argv=[sys.executable, "-c", script], mounts=mounts, reexpose=[str(runtime)]
    )
    assert (hidden.stdout.strip(), shown.stdout.strip()) == ("hidden", "runtime"), (
        hidden.stderr,
        shown.stderr,
    )
