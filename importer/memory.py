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

import logging
import os
from collections.abc import Callable
from pathlib import Path

from eio_common.cgroup import find_cgroup, stat_value

PROC_STATUS = Path("/proc/self/status")
log = logging.getLogger("importer")


class MemorySampler:
    def __init__(self) -> None:
        import psutil  # here, not at the top: importing this module stays cheap

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
            value = stat_value(cg.path / "memory.stat", key)
            if value:
                return value
        return self.anon()

    def anon(self) -> int:
        """The process's anonymous resident memory (``RssAnon``), else its RSS."""
        value = stat_value(PROC_STATUS, "RssAnon:", scale=1024)
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


class MemoryGuard:
    """The memory threshold: samples (each one also counted, for the peak and the gauge) and
    whether the importer should checkpoint and exit 75 to be restarted."""

    def __init__(
        self, sampler: MemorySampler, threshold_bytes: int, on_sample: Callable[[int], None]
    ) -> None:
        self.sampler = sampler
        self.threshold_bytes = threshold_bytes
        self.on_sample = on_sample

    def sample(self) -> int:
        cur = self.sampler.sample()
        self.on_sample(cur)
        return cur

    def over(self) -> bool:
        if not self.threshold_bytes:
            return False
        cur = self.sample()
        if cur >= self.threshold_bytes:
            log.warning(
                "memory %d MiB >= threshold %d MiB: checkpoint and exit 75",
                cur // 2**20,
                self.threshold_bytes // 2**20,
            )
            return True
        return False
