"""Progress (a tqdm bar on a TTY, tqdm-formatted log lines otherwise), the report and the
summary."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from eio_common.contract import Checkpoint
from importer.counts import RunStats

log = logging.getLogger("importer")
PLAIN_INTERVAL = 10.0
BAR_INTERVAL = 0.5
# files done of the shard's, chunks embedded in this run, memory, and the time left at the
# rate files were done since the first update (tqdm: {remaining})
FIELDS = "files {n_fmt}/{total_fmt} ({percentage:.1f}%){postfix}  eta {remaining}"


class Progress:
    """``bar``: a tqdm bar on stderr; ``plain``: a ``progress:`` log line every
    PLAIN_INTERVAL seconds with the same fields; ``off``; ``auto``: bar on a TTY, else plain."""

    def __init__(self, mode: str, files_total: int) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "plain"
        self.mode = mode
        self.total = files_total
        self.t0 = time.monotonic()
        self.last = 0.0
        self.first: tuple[float, int] | None = None  # (time, files done) at the first update
        self.bar: tqdm[None] | None = None
        self._logs = contextlib.ExitStack()  # while the bar is shown, log lines print above it

    def update(self, files_done: int, chunks: int, memory: int) -> None:
        if self.mode == "off":
            return
        now = time.monotonic()
        if now - self.last < (BAR_INTERVAL if self.mode == "bar" else PLAIN_INTERVAL):
            return
        self.last = now
        rate = chunks / max(1e-9, now - self.t0)
        postfix = f"chunks {chunks} ({rate:.1f}/s)  mem {memory / 2**20:.0f} MiB"
        if self.first is None:
            self.first = (now, files_done)
        if self.mode != "bar":
            t, initial = self.first
            text = tqdm.format_meter(
                files_done, self.total, now - t, bar_format=FIELDS, postfix=postfix,
                initial=initial,
            )  # fmt: skip
            log.info("progress: %s", text)
            return
        if self.bar is None:
            self._logs.enter_context(logging_redirect_tqdm([logging.getLogger()]))
            self.bar = tqdm(
                total=self.total, initial=files_done, file=sys.stderr, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| " + FIELDS, mininterval=0, leave=True,
            )  # fmt: skip
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.update(files_done - self.bar.n)  # a new scan may add files: n can go back

    def close(self, files_done: int | None = None) -> None:
        """End the bar (at ``files_done``, the final count, if given)."""
        if self.bar is not None:
            if files_done is not None:
                self.bar.update(files_done - self.bar.n)
            self.bar.close()
        self._logs.close()


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
