"""The importer verifies its own store and records what it found in its checkpoint.

The importer holds the store (an embedded store can have only one holder), so it verifies it
itself, with the survey of ``embedding-importer verify`` (``importer.survey``: the tree, the
manifest and the points compared, nothing embedded) on the sink it has open: once at the end of
a one-shot run, and in follow mode at the first catch-up and then every
``verify_interval_seconds`` while caught up (0: never). The result goes into the checkpoint
(``Checkpoint.verify``), which the operator reads for the ``Verified`` condition, the counts in
``status.verify`` and the metric. It only reports: ``verify --repair`` repairs.

A survey reads the manifest, so the file states must be saved first: the caller writes a
checkpoint (points durable, then the states) before ``run``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from eio_common.contract import VERIFY_DAMAGE, VerifyResult
from importer.checkpoint_store import Superseded
from importer.checkpointer import Checkpointer
from importer.settings import Settings
from importer.sink import Sink

log = logging.getLogger("importer")


@dataclass
class SelfCheck:
    s: Settings
    last: float | None = None  # monotonic time of the last verify in this run

    @property
    def enabled(self) -> bool:
        return self.s.verify_interval_seconds > 0

    def due(self, caught_up: bool) -> bool:
        """Follow mode: at the first catch-up of the run, then every interval while caught up."""
        if not (self.enabled and self.s.follow and caught_up):
            return False
        return self.last is None or time.monotonic() - self.last >= self.s.verify_interval_seconds

    def run(self, sink: Sink) -> VerifyResult:
        from importer.verify import result_of, survey_store

        t0 = time.monotonic()
        found = survey_store(self.s, sink)
        self.last = time.monotonic()
        result = result_of(found)
        damage = {k: result.counts[k] for k in VERIFY_DAMAGE if result.counts.get(k)}
        log.log(
            logging.INFO if result.clean else logging.WARNING,
            "verify: %d files, %d entries, %d points in %.2fs: %s",
            *(result.files, result.entries, result.points, self.last - t0),
            "clean" if result.clean else f"damage {damage}; run embedding-importer verify --repair",
        )
        return result

    def check(self, ckpt: Checkpointer) -> None:
        """Save the states, survey the store, write the result into the checkpoint. A failed
        survey is logged, never the end of the run (a ``Stop`` too: the loop sees the flag)."""
        assert ckpt.sink is not None
        try:
            ckpt.write()
            ckpt.cp.verify = self.run(ckpt.sink)
        except Superseded:
            raise  # a newer attempt owns the shard: stop, as every other write does
        except Exception as e:
            self.last = time.monotonic()  # not again at once: at the next interval
            log.warning("verify failed: %s: %s", type(e).__name__, e)
            return
        ckpt.write()
