"""Progress display (a ``\\r`` line on a TTY, plain log lines otherwise) and the summary."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from eio_common.contract import Checkpoint

log = logging.getLogger("importer")
PLAIN_INTERVAL = 10.0
BAR_INTERVAL = 0.5


class Progress:
    def __init__(self, mode: str, files_total: int) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "plain"
        self.mode = mode
        self.total = files_total
        self.t0 = time.monotonic()
        self.last = 0.0
        self._bar_shown = False

    def update(self, files_done: int, chunks: int, memory: int) -> None:
        if self.mode == "off":
            return
        now = time.monotonic()
        interval = BAR_INTERVAL if self.mode == "bar" else PLAIN_INTERVAL
        if now - self.last < interval:
            return
        self.last = now
        rate = chunks / max(1e-9, now - self.t0)
        pct = 100.0 * files_done / self.total if self.total else 100.0
        text = (
            f"files {files_done}/{self.total} ({pct:.1f}%)  chunks {chunks} "
            f"({rate:.1f}/s)  mem {memory / 2**20:.0f} MiB"
        )
        if self.mode == "bar":
            width = 24
            filled = int(width * pct / 100)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\x1b[K")
            sys.stderr.flush()
            self._bar_shown = True
        else:
            log.info("progress: %s", text)

    def close(self) -> None:
        if self._bar_shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


@dataclass
class RunStats:
    """What this run did (not earlier runs): the ``--report`` file and the summary."""

    files_done: int = 0
    records: int = 0
    chunks_embedded: int = 0
    points_upserted: int = 0
    points_deleted: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    changes: dict[str, int] = field(default_factory=dict)
    elapsed_seconds: float = 0.0
    store_open_seconds: float = 0.0  # opening the store and loading the file states
    start_memory_bytes: int = 0  # measured memory once the store is open, before any work
    peak_memory_bytes: int = 0
    exit_reason: str = ""


def write_report(path: str, stats: RunStats) -> None:
    """One JSON object, written atomically (temp file + rename)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", dir=d)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(stats), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def format_summary(cp: Checkpoint, st: RunStats, loop_seconds: float, cpu_seconds: float) -> None:
    """Print the end-of-run summary to stderr."""
    c = cp.counters
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(st.skipped.items())) or "none"
    changes = ", ".join(f"{k}={v}" for k, v in sorted(st.changes.items())) or "none"
    rate = st.chunks_embedded / loop_seconds if loop_seconds > 0 else 0.0
    text = "\n".join(
        [
            f"embedding-importer: exit reason: {st.exit_reason}",
            f"  files:   {cp.files_done}/{cp.files_total} up to date; {st.files_done} files "
            f"or changes imported in this run ({changes})",
            f"  this run: records {st.records}, chunks embedded {st.chunks_embedded}, points "
            f"deleted {st.points_deleted}; skipped: {skipped}",
            f"  all runs: records {c.records}  chunks: {c.chunks}  points: {c.points}  "
            f"deleted: {c.deleted}",
            f"  {st.chunks_embedded} chunks in {loop_seconds:.2f}s of import loop "
            f"({rate:.1f} chunks/s; cpu {cpu_seconds:.2f}s; {st.elapsed_seconds:.1f}s with "
            f"start-up), peak memory {st.peak_memory_bytes / 2**20:.0f} MiB, attempt {cp.attempt}",
        ]
    )
    print(text, file=sys.stderr, flush=True)
