"""Container processes that outlive their node agent.

Each container process is a session leader (:mod:`.containers` starts it with a new session);
the agent records its pid and start time in ``<pod state dir>/procs`` when it starts it. A
graceful agent stop terminates them, but an agent that was killed (``devcluster node
partition``: a zombie node whose pods keep running) leaves them behind. A new agent cannot
adopt them, so at start it kills every recorded process that is still alive, telling apart the
pods the API server no longer has (deleted or evicted while the node was away) from those it
still binds to this node (their containers restart, as ``ContainerStatusUnknown``).
``devcluster node lose`` uses :func:`kill_all` to take a node's pods down with its agent.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

PROCS_FILE = "procs"


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks): a pid plus this names one
    process, not a later one that reused the pid. None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def record(pod_state: Path, pid: int) -> None:
    """Remember container process ``pid`` of the pod whose state directory is ``pod_state``."""
    started = start_time(pid)
    if started is None:
        return
    pod_state.mkdir(parents=True, exist_ok=True)
    with (pod_state / PROCS_FILE).open("a") as f:
        f.write(f"{pid} {started}\n")


def parse_procs(text: str) -> list[tuple[int, str]]:
    """``pid start`` lines; anything else is skipped."""
    out: list[tuple[int, str]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            out.append((int(parts[0]), parts[1]))
    return out


def alive(state_dir: Path) -> dict[str, list[int]]:
    """Pod uid -> its recorded container processes still alive (same pid and start time)."""
    found: dict[str, list[int]] = {}
    if not state_dir.is_dir():
        return found
    for pod_dir in sorted(state_dir.iterdir()):
        try:
            text = (pod_dir / PROCS_FILE).read_text()
        except OSError:
            continue
        pids = [pid for pid, st in parse_procs(text) if start_time(pid) == st]
        if pids:
            found[pod_dir.name] = pids
    return found


def _kill(pid: int) -> None:
    for fn in (os.killpg, os.kill):  # the container's session, then the leader itself
        with contextlib.suppress(ProcessLookupError, PermissionError):
            fn(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Reaped:
    gone: dict[str, list[int]]  # pods the API server no longer binds to this node
    kept: dict[str, list[int]]  # pods it still binds here (their containers restart)


def reap(state_dir: Path, on_api: Container[str]) -> Reaped:
    """SIGKILL every recorded container process still alive under ``state_dir``; ``on_api``:
    the uids of the pods the API server binds to this node."""
    procs = alive(state_dir)
    for pids in procs.values():
        for pid in pids:
            _kill(pid)
    for uid in procs:
        with contextlib.suppress(OSError):
            (state_dir / uid / PROCS_FILE).unlink()
    return Reaped(
        gone={u: p for u, p in procs.items() if u not in on_api},
        kept={u: p for u, p in procs.items() if u in on_api},
    )


def kill_all(state_dir: Path) -> dict[str, list[int]]:
    """SIGKILL every recorded container process under ``state_dir`` (a lost node)."""
    return reap(state_dir, ()).gone
