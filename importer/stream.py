"""The event stream: scans of the source and the events of the work they find.

A one-shot run makes one pass. ``--follow`` scans again whenever the source may have changed
(``importer.watch``), or as soon as a held open end (a last line without newline, a withheld
last chunk: ``importer.reading``) has settled, even without a new event, and never ends by
itself; between passes it yields ``IdleEv`` (caught up as far as it knows: flush, heartbeat).
A roll (``recycle_every_files``) ends the stream early, with work left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from importer.ledger import Event, Gone, IdleEv, Ledger
from importer.reading import FileReader
from importer.scan import scan
from importer.settings import Settings
from importer.sources import SourceFile, source_roots

log = logging.getLogger("importer")


@dataclass
class EventStream:
    s: Settings
    reader: FileReader
    ledger: Ledger
    list_files: Callable[[], list[SourceFile]]
    should_stop: Callable[[], bool]
    on_gone: Callable[[list[Gone]], None]  # files that disappeared (keep or delete points)
    # the longest wait between idle heartbeats (None: checkpoint_interval), e.g. while a rebuild
    # waits for an order it looks for every second
    idle_wait: Callable[[], float | None] = lambda: None
    recycled: bool = False  # stopped for a planned roll, with work left
    files_read: int = 0  # in this run
    scans: int = 0  # in this run (the first one is logged)

    def events(self, files: list[SourceFile]) -> Iterator[Event | IdleEv]:
        from importer.watch import Watcher

        s = self.s
        watcher = Watcher(source_roots(s.source), s.watch, s.poll_interval) if s.follow else None
        try:
            while not self.should_stop():
                yield from self._pass(files)
                if watcher is None or self.should_stop():
                    return
                if self._recycle_due():  # follow mode: roll now, the next pod watches on
                    self.recycled = True
                    return
                yield IdleEv()
                while not watcher.wait(self._wait_seconds(), self.should_stop):
                    if self.should_stop():
                        return
                    if self.reader.held_settled():
                        break  # a held open end (last line, last chunk) settled: read it now
                    yield IdleEv()  # heartbeat while nothing changes
                files = self.list_files()
        finally:
            if watcher is not None:
                watcher.close()

    def _pass(self, files: list[SourceFile]) -> Iterator[Event]:
        """One scan of the source and the work it finds."""
        self.reader.held.clear()
        listing = scan(files, self.ledger.states)
        log.log(
            logging.DEBUG if self.scans else logging.INFO,
            "scan %d done: %d files, %d to read, %d gone",
            *(self.scans + 1, len(files), len(listing.jobs), len(listing.gone)),
        )
        self.scans += 1
        if not listing.jobs and not self.s.follow:
            log.info("nothing changed in the source since the last run")
        self.on_gone(self.ledger.begin_pass(listing, self.s.on_delete))
        for job in listing.jobs:
            if self._recycle_due():
                self.recycled = True  # work remains: a planned roll, not the end
            if self.should_stop() or self.recycled:
                return
            yield from self.reader.events(job)
            self.files_read += 1
        self.ledger.end_pass()

    def _wait_seconds(self) -> float:
        """Until the next heartbeat, or sooner when a held file settles before it."""
        due = self.reader.held_due()
        interval = min(self.s.checkpoint_interval, self.idle_wait() or float("inf"))
        return interval if due is None else max(0.05, min(interval, due))

    def _recycle_due(self) -> bool:
        n = self.s.recycle_every_files
        return bool(n) and self.files_read >= n
