"""One retry loop for the importer: the store (forever, while the run goes on) and the
Kubernetes API for checkpoints (a bounded number of attempts). Callers say which errors are
transient with an explicit predicate; anything else is raised at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Stop(Exception):
    """Raised while waiting when the run was asked to stop."""


def _never() -> bool:
    return False


def _ignore(_why: str | None) -> None:
    pass


def retry(
    fn: Callable[[], T],
    transient: Callable[[Exception], bool],
    why: Callable[[Exception], str],
    should_stop: Callable[[], bool] = _never,
    on_retry: Callable[[str | None], None] = _ignore,
    attempts: int | None = None,
    max_delay: float = 30.0,
    delay: float = 0.5,
    level: int = logging.WARNING,
) -> T:
    """Call ``fn``; while it fails with a ``transient`` error, wait with backoff (``delay``,
    0.5 s by default, doubling to ``max_delay``; 0 retries at once) and call again: forever, or
    ``attempts`` times in all (then the last error is raised). ``should_stop`` ends the wait
    with ``Stop``; ``on_retry`` hears why it waits, and ``None`` once a call went through
    again. Each retry is logged at ``level``."""
    tries = 0
    while True:
        tries += 1
        try:
            result = fn()
        except Exception as e:
            if not transient(e) or (attempts is not None and tries >= attempts):
                raise
            err = e
        else:
            if tries > 1:
                on_retry(None)
            return result
        reason = why(err)
        on_retry(reason)
        log.log(level, "%s; retrying in %.1fs, no progress lost", reason, delay)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if should_stop():
                raise Stop(f"stopped while waiting: {reason}") from err
            time.sleep(0.1)
        delay = min(delay * 2, max_delay)
