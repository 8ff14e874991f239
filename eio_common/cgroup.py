"""The one reader of a process's cgroups: which memory cgroup it is in (v1 or v2, on hybrid
hosts too), where the v2 hierarchy is mounted, and the limit of that cgroup. Used by the
importer's memory sampler and by the dev cluster's node agent (which creates pod cgroups).
Standard library only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNLIMITED = 1 << 60  # v1 reports 9223372036854771712 for "no limit"


@dataclass
class CgroupInfo:
    version: int
    path: Path
    limit: int  # bytes, 0 = no limit


def read_int(p: Path) -> int | None:
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


def stat_value(p: Path, key: str, scale: int = 1) -> int:
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
        lim = read_int(base / "memory.limit_in_bytes")
        if lim is not None and (base / "memory.usage_in_bytes").exists():
            candidates.append(CgroupInfo(1, base, 0 if lim >= UNLIMITED else lim))
    mount = v2_mount()
    if v2_path is not None and mount is not None:
        base = mount / v2_path.lstrip("/")
        if (base / "memory.current").exists():
            lim = read_int(base / "memory.max")
            candidates.append(CgroupInfo(2, base, lim or 0))
    limited = [c for c in candidates if c.limit > 0]
    return limited[0] if limited else None
