"""Follow mode: wait until a source may have changed.

``inotify`` (through watchfiles, recursive, so new project directories are watched too) wakes
the importer as soon as a file is written; a full rescan also runs every ``RESCAN_SECONDS`` as a
safety net (events can be lost when the kernel's queue overflows). ``poll`` rescans every
``poll_interval`` seconds (network file systems, or where inotify watches run out). ``auto`` is
inotify when it can start, else polling.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)
RESCAN_SECONDS = 60.0
STEP = 0.1


class Watcher:
    def __init__(self, roots: list[str], mode: str, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self.last_scan = time.monotonic()
        self.stop = threading.Event()
        self.events: Iterator[Any] | None = None
        self.mode = "poll"
        if mode in ("auto", "inotify"):
            try:
                self.events = self._inotify(roots)
                self.mode = "inotify"
            except Exception as e:
                if mode == "inotify":
                    raise
                log.warning("inotify unavailable (%s): polling every %.1fs", e, poll_interval)

    def _inotify(self, roots: list[str]) -> Iterator[Any]:
        import watchfiles

        events = watchfiles.watch(
            *roots,
            watch_filter=None,
            debounce=200,
            step=50,
            rust_timeout=500,
            yield_on_timeout=True,
            force_polling=False,
            stop_event=self.stop,
            ignore_permission_denied=True,
            raise_interrupt=False,
        )
        next(events)  # starts the watcher now (raises here if inotify cannot start)
        return events

    def wait(self, timeout: float, should_stop: Callable[[], bool]) -> bool:
        """Block up to ``timeout`` seconds; True when the source should be scanned again."""
        deadline = time.monotonic() + timeout
        due = RESCAN_SECONDS if self.events is not None else self.poll_interval
        while not should_stop():
            now = time.monotonic()
            if now - self.last_scan >= due:
                return self._scanned()
            if now >= deadline:
                return False
            if self.events is not None:
                if next(self.events, set()):
                    return self._scanned()
            else:
                time.sleep(min(STEP, max(0.0, deadline - now)))
        return False

    def _scanned(self) -> bool:
        self.last_scan = time.monotonic()
        return True

    def close(self) -> None:
        self.stop.set()
