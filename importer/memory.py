"""Memory sampling for the threshold, and the fault-injection test hook.

What is measured is *anonymous* memory, the kind a leak grows:
- the process's own memory cgroup, if it has a limit (a pod, or the node agent's cgroup):
  cgroup v2 ``anon`` and cgroup v1 ``total_rss`` from ``memory.stat``. Page cache does not
  count: the embedded store maps its files, and their pages inflate the cgroup's usage (and a
  pod's reported memory) without being a leak; the kernel reclaims them before an OOM kill.
- otherwise the process's ``RssAnon`` (a cgroup without a limit is typically shared with
  unrelated processes, e.g. a login session, so its usage says nothing about this process).

A ``%`` threshold is a percentage of the cgroup limit; without a limit it is a percentage of
the machine's physical memory (``MemTotal``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_STATUS = Path("/proc/self/status")
UNLIMITED = 1 << 60  # v1 reports 9223372036854771712 for "no limit"


@dataclass
class CgroupInfo:
    version: int
    path: Path
    limit: int  # bytes, 0 = no limit


def _read_int(p: Path) -> int | None:
    try:
        s = p.read_text().strip()
    except OSError:
        return None
    if s == "max":
        return 0
    try:
        return int(s)
    except ValueError:
        return None


def _stat(p: Path, key: str, scale: int = 1) -> int:
    """The number after ``key`` in a ``key value [unit]`` file (memory.stat, /proc status)."""
    try:
        for line in p.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == key:
                return int(parts[1]) * scale
    except (OSError, ValueError, IndexError):
        pass
    return 0


def parse_proc_cgroup(text: str) -> tuple[str | None, str | None]:
    """(v1 memory cgroup path, v2 path) from the text of ``/proc/<pid>/cgroup``: the v1 line
    names the ``memory`` controller (``N:memory:/path``, possibly ``N:cpu,memory:/path``), the
    v2 line is hierarchy 0 with no controllers (``0::/path``)."""
    v1 = v2 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if "memory" in controllers.split(","):
            v1 = path
        elif hierarchy == "0" and controllers == "":
            v2 = path
    return v1, v2


def v2_mount(root: Path = CGROUP_ROOT) -> Path | None:
    """Where the cgroup v2 hierarchy is mounted: ``<root>/unified`` on a hybrid v1/v2 host,
    else ``<root>`` itself on a v2 host; None if neither (a v1-only host)."""
    for cand in (root / "unified", root):
        if (cand / "cgroup.controllers").exists():
            return cand
    return None


def find_cgroup(proc_cgroup: str = "/proc/self/cgroup") -> CgroupInfo | None:
    """The process's memory cgroup with a limit, v1 or v2, else None."""
    try:
        v1_path, v2_path = parse_proc_cgroup(Path(proc_cgroup).read_text())
    except OSError:
        return None
    candidates: list[CgroupInfo] = []
    if v1_path is not None:
        base = CGROUP_ROOT / "memory" / v1_path.lstrip("/")
        lim = _read_int(base / "memory.limit_in_bytes")
        if lim is not None and (base / "memory.usage_in_bytes").exists():
            candidates.append(CgroupInfo(1, base, 0 if lim >= UNLIMITED else lim))
    mount = v2_mount()
    if v2_path is not None and mount is not None:
        base = mount / v2_path.lstrip("/")
        if (base / "memory.current").exists():
            lim = _read_int(base / "memory.max")
            candidates.append(CgroupInfo(2, base, lim or 0))
    limited = [c for c in candidates if c.limit > 0]
    return limited[0] if limited else None


class MemorySampler:
    def __init__(self) -> None:
        import psutil  # here, not at the top: devcluster reads cgroups through this module

        self.cgroup = find_cgroup()
        self.proc = psutil.Process()
        self.source = (
            f"cgroup v{self.cgroup.version} {self.cgroup.path} (anonymous)"
            if self.cgroup
            else "process RssAnon"
        )

    @property
    def limit(self) -> int:
        """The limit a ``%`` threshold refers to."""
        if self.cgroup:
            return self.cgroup.limit
        import psutil

        return int(psutil.virtual_memory().total)

    def sample(self) -> int:
        cg = self.cgroup
        if cg is not None:
            key = "total_rss" if cg.version == 1 else "anon"
            value = _stat(cg.path / "memory.stat", key)
            if value:
                return value
        return self.anon()

    def anon(self) -> int:
        """The process's anonymous resident memory (``RssAnon``), else its RSS."""
        value = _stat(PROC_STATUS, "RssAnon:", scale=1024)
        return value or self.rss()

    def rss(self) -> int:
        return int(self.proc.memory_info().rss)


class FaultHold:
    """TEST HOOK (IMPORTER_FAULT_HOLD_MB_PER_FILE): hold N MB more per processed file.

    The memory is real anonymous memory, touched page by page, so it counts in RSS and in the
    cgroup, and the threshold and the kernel's OOM killer act on it for real.
    """

    def __init__(self, mb_per_file: int) -> None:
        self.mb = mb_per_file
        self.held: list[bytearray] = []

    def file_done(self) -> None:
        if self.mb <= 0:
            return
        n = self.mb * 1024 * 1024
        b = bytearray(n)
        page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        b[::page] = b"\x01" * len(range(0, n, page))
        self.held.append(b)

    @property
    def held_bytes(self) -> int:
        return sum(len(b) for b in self.held)
