"""When a rebuild's readers switch to the new version (``run --rebuild``, docs/live-sources.md
"When settings change").

Alone (no ``--switch-on-order``) a shard switches as soon as its new version is complete
(one-shot) or caught up (``--follow``). With ``--switch-on-order`` (several shards, set by the
operator) it reports ready instead (``BuildState.ready_at``) and waits for the orders of its
checkpoint store (``CheckpointStore.orders``), both naming its ``BuildState.digest``:

- switch: readers see the new version; the old one stays open (reads pinned to its build,
  ``importer.fanout``, still answer) and is listed in ``BuildState.retiring``;
- retire: the old versions beyond ``--keep-old-versions`` are closed and deleted.

A one-shot shard waits for both (heartbeating its checkpoint) before it exits 0; a following
one imports on meanwhile. On a Qdrant server every shard shares the collection: only shard 0
moves the alias and deletes versions, the others record the new state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, Literal

from eio_common.contract import BuildState
from eio_common.retry import Stop
from importer.builds import retire, switch
from importer.checkpoint_store import Orders
from importer.checkpointer import Checkpointer
from importer.settings import Settings
from importer.sink import Sink
from importer.versions import Plan

log = logging.getLogger("importer")

ORDERS_POLL: Final = 1.0  # seconds: the orders are read at most this often

Step = Literal["switch", "retire"]


def next_step(build: BuildState | None, rebuilding: bool, orders: Orders) -> Step | None:
    """What the orders ask of a shard in state ``build`` (``rebuilding``: its new version is
    not switched to yet); None: nothing (yet). An order for another digest is not ours."""
    if build is None or build.digest is None:
        return None
    if rebuilding and build.ready_at is not None and orders.switch == build.digest:
        return "switch"
    if not rebuilding and build.retiring and orders.retire == build.digest:
        return "retire"
    return None


def waiting(build: BuildState | None, rebuilding: bool) -> bool:
    """Is a shard waiting for an order: ready and not switched, or switched and not retired?"""
    if build is None:
        return False
    return (rebuilding and build.ready_at is not None) or (not rebuilding and bool(build.retiring))


def leads(s: Settings) -> bool:
    """Moves the pointer (each embedded store its own) or the alias (shard 0 on a server)."""
    return not s.qdrant_url or s.shard_pair[0] == 0


class Switcher:
    """Owns the rebuild's plan until the switch (``plan`` None: no rebuild under way)."""

    def __init__(self, s: Settings, plan: Plan | None, ckpt: Checkpointer) -> None:
        self.s, self.plan, self.ckpt = s, plan, ckpt
        self.sink: Sink | None = None
        self.last_poll = float("-inf")

    @property
    def waiting(self) -> bool:
        return self.s.switch_on_order and waiting(self.ckpt.cp.build, self.plan is not None)

    def ready(self) -> None:
        """The new version is complete (one-shot) or caught up (follow): switch, or with
        ``--switch-on-order`` report ready (once) and act on an order already given."""
        if self.plan is None or self.sink is None:
            return
        if not self.s.switch_on_order:
            self.ckpt.guard(fresh=True)  # a zombie must not switch readers nor delete versions
            switch(self.sink, self.plan, self.s, self.ckpt.cp)
            self.plan = None
            return
        build = self.ckpt.cp.build
        if build is not None and build.ready_at is None:
            build.ready_at = datetime.now(UTC)
            self.sink.offer_target()
            self.ckpt.write()  # at once: the operator waits for every shard's readyAt
            log.info(
                "rebuild of %s ready: version %s (build %s) waits for the switch order",
                *(self.plan.collection, self.plan.target, build.digest),
            )
            self.last_poll = float("-inf")
        self.poll()

    def wait(self, stop: Callable[[], bool]) -> bool:
        """One-shot: heartbeat the checkpoint until switched and retired (False: asked to stop
        first, or the store waited for was given up on)."""
        log.info("complete: waiting for the switch and retire orders")
        try:
            while self.waiting and not stop():
                self.poll()
                self.ckpt.maybe_write()
                time.sleep(0.2)  # the next look at the orders and the stop flag
        except Stop:
            return False
        return not self.waiting

    def poll(self) -> None:
        """Act on the orders (read at most every ``ORDERS_POLL`` seconds while waiting)."""
        now = time.monotonic()
        if not self.waiting or self.sink is None or now - self.last_poll < ORDERS_POLL:
            return
        self.last_poll = now
        cp = self.ckpt.cp
        step = next_step(cp.build, self.plan is not None, self.ckpt.store.orders())
        if step is None:
            return
        self.ckpt.guard(fresh=True)  # a zombie must not switch readers nor delete versions
        if step == "switch":
            assert self.plan is not None
            switch(self.sink, self.plan, self.s, cp, keep_old=True, leader=leads(self.s))
            self.plan = None
        else:
            retire(self.sink, self.s, cp, leader=leads(self.s))
        self.ckpt.write()
        self.last_poll = float("-inf")  # a retire order given with the switch: at once
