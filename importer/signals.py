"""SIGTERM and SIGINT: the first asks the importer to stop (checkpoint, exit 75), the second
exits at once (the last checkpoint stays valid)."""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType
from typing import Any

from eio_common import contract

log = logging.getLogger("importer")


class StopFlag:
    """Why the importer is stopping (None: it is not); true once a stop was asked for."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._old: dict[signal.Signals, Any] = {}

    def __call__(self) -> bool:
        return self.reason is not None

    def install(self) -> None:
        self._old = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }

    def restore(self) -> None:
        for sig, h in self._old.items():
            signal.signal(sig, h)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.reason is None:
            log.warning(
                "%s received: finishing the batch in hand, then checkpoint and exit 75", name
            )
            self.reason = "sigterm" if signum == signal.SIGTERM else "interrupted"
        else:
            log.warning("second %s: exiting now; the last checkpoint stays valid", name)
            os._exit(contract.EXIT_TEMPFAIL)
