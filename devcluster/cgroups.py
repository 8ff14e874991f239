"""Memory cgroups for containers: a real limit, so the kernel's OOM killer acts.

The agent creates children only under its *own* memory cgroup (``/proc/self/cgroup``):

* cgroup v1 (a ``N:memory:/path`` line): ``/sys/fs/cgroup/memory/<path>/eio-agent-<pid>/<c>``,
  limit in ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes`` when swap accounting
  exists), OOM kills counted in ``memory.oom_control`` (``oom_kill N``).
* cgroup v2 (the ``0::/path`` line, with the ``memory`` controller available): the same
  layout under the unified mount, ``memory.max`` / ``memory.swap.max``, and ``oom_kill`` in
  ``memory.events``. In v2 a cgroup with processes cannot have children, so the agent first
  moves itself into a ``<parent>/eio-agent-<pid>/agent`` leaf.

If neither is writable, :func:`detect` returns None and the agent polls RSS instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

# One reader of /proc/self/cgroup and of the v2 mount point for the project: the importer's
# (the importer image must not depend on devcluster, the other way round is fine).
from eio_common.cgroup import CGROUP_ROOT, parse_proc_cgroup, v2_mount


def parse_oom_kills(text: str) -> int:
    """``oom_kill N`` from memory.oom_control (v1) or memory.events (v2)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            with contextlib.suppress(ValueError):
                return int(value.strip())
    return 0


@dataclass
class MemoryCgroup:
    """One container's cgroup."""

    path: Path
    version: int

    def set_limit(self, limit_bytes: int | None) -> None:
        if self.version == 1:
            if limit_bytes:
                (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
                memsw = self.path / "memory.memsw.limit_in_bytes"
                if memsw.exists():
                    with contextlib.suppress(OSError):
                        memsw.write_text(str(limit_bytes))
        else:
            if limit_bytes:
                (self.path / "memory.max").write_text(str(limit_bytes))
            swap = self.path / "memory.swap.max"
            if swap.exists():
                with contextlib.suppress(OSError):
                    swap.write_text("0")

    @property
    def mount_target(self) -> Path:
        """Where a container expects its own cgroup: /sys/fs/cgroup/memory (v1) or the
        unified mount (v2)."""
        if self.version == 1:
            return CGROUP_ROOT / "memory"
        return v2_mount() or CGROUP_ROOT

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def add(self, pid: int) -> None:
        self.procs_file.write_text(str(pid))

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in self.procs_file.read_text().split()]
        except (OSError, ValueError):
            return []

    def oom_kills(self) -> int:
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            return parse_oom_kills((self.path / name).read_text())
        except OSError:
            return 0

    def usage(self) -> int:
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        try:
            return int((self.path / name).read_text().strip())
        except (OSError, ValueError):
            return 0

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def remove(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    return
                self.kill_all()
                time.sleep(0.05)


class CgroupManager:
    """Creates per-container memory cgroups below the agent's own cgroup."""

    def __init__(self, base: Path, version: int) -> None:
        self.base = base
        self.version = version

    def create(self, name: str, limit_bytes: int | None) -> MemoryCgroup:
        path = self.base / name
        with contextlib.suppress(FileExistsError):
            path.mkdir()
        cg = MemoryCgroup(path, self.version)
        cg.set_limit(limit_bytes)
        return cg

    def cleanup(self) -> None:
        if not self.base.exists():
            return
        for child in sorted(self.base.iterdir(), reverse=True):
            if child.is_dir():
                cg = MemoryCgroup(child, self.version)
                cg.kill_all()
                cg.remove()
        if self.version == 2:
            # the agent's own leaf: move ourselves back up before removing it
            parent_procs = self.base.parent / "cgroup.procs"
            with contextlib.suppress(OSError):
                parent_procs.write_text(str(os.getpid()))
        with contextlib.suppress(OSError):
            self.base.rmdir()


def detect(run_dir: Path | None = None) -> tuple[CgroupManager | None, str]:
    """A manager for this process's memory cgroup, or None with the reason why not."""
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError as e:
        return None, f"cannot read /proc/self/cgroup: {e}"
    v1, v2 = parse_proc_cgroup(text)
    reasons: list[str] = []
    if v1 is not None:
        own = CGROUP_ROOT / "memory" / v1.lstrip("/")
        base = own / f"eio-agent-{os.getpid()}"
        try:
            base.mkdir(exist_ok=True)
            probe = base / "probe"
            probe.mkdir(exist_ok=True)
            (probe / "memory.limit_in_bytes").write_text(str(64 << 20))
            probe.rmdir()
            _record(run_dir, base)
            return CgroupManager(base, 1), f"cgroup v1 memory controller at {base}"
        except OSError as e:
            reasons.append(f"v1 {own}: {e}")
            with contextlib.suppress(OSError):
                base.rmdir()
    mount = v2_mount()
    if v2 is not None and mount is not None:
        own = mount / v2.lstrip("/")
        try:
            if "memory" not in (own / "cgroup.controllers").read_text().split():
                raise OSError(f"memory controller not available in {own}")
            base = own / f"eio-agent-{os.getpid()}"
            base.mkdir(exist_ok=True)
            leaf = base / "agent"
            leaf.mkdir(exist_ok=True)
            leaf.joinpath("cgroup.procs").write_text(str(os.getpid()))
            base.joinpath("cgroup.subtree_control").write_text("+memory")
            _record(run_dir, base)
            return CgroupManager(base, 2), f"cgroup v2 at {base}"
        except OSError as e:
            reasons.append(f"v2 {own}: {e}")
    elif v2 is None:
        reasons.append("no cgroup v2 entry")
    return None, "; ".join(reasons) or "no memory cgroup found"


def _record(run_dir: Path | None, base: Path) -> None:
    """Remember created cgroup roots so `devcluster down` can remove leftovers."""
    if run_dir is None:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "cgroups").open("a") as f:
        f.write(f"{base}\n")


def cleanup_stale(run_dir: Path) -> None:
    """Kill and remove cgroups recorded by agents that are gone."""
    record = run_dir / "cgroups"
    if not record.exists():
        return
    keep: list[str] = []
    for line in record.read_text().splitlines():
        base = Path(line.strip())
        if not line.strip() or not base.exists():
            continue
        version = 1 if "/memory/" in str(base) else 2
        mgr = CgroupManager(base, version)
        for child in sorted(base.iterdir(), reverse=True):
            if child.is_dir():
                cg = MemoryCgroup(child, version)
                cg.kill_all()
                cg.remove()
        try:
            base.rmdir()
        except OSError:
            keep.append(str(mgr.base))
    record.write_text("".join(f"{k}\n" for k in keep))
