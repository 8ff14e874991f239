"""Progress display (a ``\\r`` line on a TTY, plain log lines otherwise) and the summary."""

from __future__ import annotations

import logging
import sys
import time

from importer.contract import Checkpoint

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


def format_summary(
    cp: Checkpoint,
    reason: str,
    seconds: float,
    chunks_run: int,
    files_run: int,
    peak: int,
    loop_seconds: float,
    loop_cpu_seconds: float = 0.0,
) -> str:
    c = cp.counters
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(c.skipped.items())) or "none"
    rate = chunks_run / loop_seconds if loop_seconds > 0 else 0.0
    return "\n".join(
        [
            f"embedding-importer: exit reason: {reason}",
            f"  files:   {cp.files_done}/{cp.files_total} done ({files_run} in this run)",
            f"  records: {c.records}  chunks: {c.chunks}  points: {c.points}",
            f"  skipped: {skipped}",
            f"  this run: {chunks_run} chunks in {loop_seconds:.2f}s of import loop "
            f"({rate:.1f} chunks/s; cpu {loop_cpu_seconds:.2f}s; {seconds:.1f}s with start-up), "
            f"peak memory {peak / 2**20:.0f} MiB, attempt {cp.attempt}",
        ]
    )
