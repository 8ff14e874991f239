"""Fencing (issue 18) through the real importer: real model, real Qdrant Edge store.

The fence normally lives on the checkpoint ConfigMap (``eio.dev/current-attempt``, checked by
``ConfigMapStore``: see tests/e2e/test_importer_checkpoint_configmap.py for the API server).
Here a file checkpoint carries it in a file beside it, read by the same pure check
(``contract.superseded_by``) at the same points (``load``, ``save``, ``check_fence``), so the
runner's side is shown without a cluster: an older attempt that finds a newer one stops with
exit 79 and writes neither points, nor file states, nor its checkpoint.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import Workspace, make_corpus

from eio_common import contract
from eio_common.contract import BuildState, Checkpoint
from importer import checkpointer, cli, runner, sink, switcher
from importer.checkpoint_store import FileStore, Superseded
from importer.settings import Settings
from importer.versions import Plan


class FencedFileStore(FileStore):
    """A file checkpoint with a fence: ``fence`` holds the shard's current attempt. With
    ``bump_to``, it plays the operator: right after this run's first checkpoint write it
    raises the fence (as before creating the next attempt's pod)."""

    def __init__(self, path: Path, attempt: int, fence: Path, bump_to: int | None) -> None:
        super().__init__(str(path))
        self.attempt, self.fence, self.bump_to = attempt, fence, bump_to
        self.saved: list[str] = []

    def check_fence(self) -> None:
        stored = int(self.fence.read_text()) if self.fence.exists() else None
        newer = contract.superseded_by(stored, self.attempt)
        if newer is not None:
            raise Superseded(self.attempt, newer)

    def load(self) -> Checkpoint | None:
        self.check_fence()
        return super().load()

    def save(self, cp: Checkpoint) -> Checkpoint:
        self.check_fence()
        out = super().save(cp)
        self.saved.append(cp.to_json())
        if self.bump_to is not None and len(self.saved) == 1:
            self.fence.write_text(str(self.bump_to))
        return out


def _run(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, fence_at: int | None, bump_to: int | None
) -> tuple[int, FencedFileStore, list[tuple[str, int, str]]]:
    """Run attempt 1 in-process; returns its exit code, its store, and every write to the
    Qdrant store as (kind, number of IDs, the fence when it was made)."""
    fence = ws.root / "fence"
    if fence_at is not None:
        fence.write_text(str(fence_at))
    store = FencedFileStore(ws.checkpoint, 1, fence, bump_to)
    writes: list[tuple[str, int, str]] = []
    for kind in ("upsert", "delete", "save_manifest", "drop_manifest"):
        real = getattr(sink._Collections, kind)

        def watched(
            self: object, items: object, *rest: object, _k: str = kind, _real: object = real
        ) -> object:
            writes.append((_k, len(items), fence.read_text()))  # type: ignore[arg-type]
            return _real(self, items, *rest)  # type: ignore[operator]

        monkeypatch.setattr(sink._Collections, kind, watched)
    monkeypatch.setattr(runner, "open_store", lambda location, attempt: store)
    # check before every batch: the test must not depend on the 1 s staleness bound
    monkeypatch.setattr(checkpointer, "FENCE_MAX_AGE", 0.0)
    args = ws.args("--attempt", "1", "--batch-size", "4", "--log-level", "INFO")[1:]
    return cli.main(args), store, writes


def test_a_superseded_attempt_stops_before_writing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ws = Workspace(tmp_path, make_corpus(tmp_path))
    with caplog.at_level(logging.WARNING, logger="importer"):
        code, store, writes = _run(ws, monkeypatch, fence_at=2, bump_to=None)
    assert code == contract.EXIT_SUPERSEDED
    assert writes == []
    assert "attempt 1 superseded by attempt 2; stopping without writing" in caplog.text
    assert store.saved == []
    assert not ws.checkpoint.exists()
    assert not ws.qdrant.exists()  # the store was never even opened


def test_a_fence_raised_mid_run_stops_the_next_point_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Attempt 1 runs; the operator raises the fence to 2 right after attempt 1's first
    checkpoint; attempt 1's next batch of points is refused and it exits 79: the store holds
    exactly the points that first checkpoint counts, and no later checkpoint was written."""
    ws = Workspace(tmp_path, make_corpus(tmp_path))
    with caplog.at_level(logging.WARNING, logger="importer"):
        code, store, writes = _run(ws, monkeypatch, fence_at=1, bump_to=2)
    assert code == contract.EXIT_SUPERSEDED, caplog.text
    assert "attempt 1 superseded by attempt 2; stopping without writing" in caplog.text
    assert len(store.saved) == 1  # no final checkpoint: the superseded run wrote none
    first = Checkpoint.from_json(store.saved[0])
    assert Checkpoint.from_json(ws.checkpoint.read_text()) == first
    assert (first.complete, first.last_exit) == (False, None)
    # Points written before the fence rose; not one point after it. The file states of the
    # checkpoint that passed the fence are written right after it (the documented window of
    # one manifest write), and nothing after that.
    upserts = [w for w in writes if w[0] == "upsert"]
    assert upserts
    assert all(f == "1" for kind, _, f in writes if kind in ("upsert", "delete"))
    assert [k for k, _, f in writes if f == "2"] in ([], ["save_manifest"])
    assert len(ws.points()) == sum(n for _, n, _ in upserts)
    assert first.counters.chunks < 60  # the corpus has more: the run was stopped, not finished


def test_a_superseded_rebuild_does_not_switch_readers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The switch to a rebuilt version (which also deletes old versions) checks the fence
    right before, even when the last check is recent: a zombie that finishes a rebuild after
    the fence rose switches nothing and deletes nothing."""
    from importer.counts import Counts
    from importer.ledger import Ledger
    from importer.metrics import metrics

    fence = tmp_path / "fence"
    fence.write_text("2")
    store = FencedFileStore(tmp_path / "checkpoint.json", 1, fence, None)
    cp = Checkpoint(shard=0, shards=1, attempt=1)
    counts = Counts(cp.counters, metrics())
    ckpt = checkpointer.Checkpointer(
        store, cp, counts, Ledger({}, counts, False, None), lambda: 0, 10.0, None
    )
    ckpt.last_fence = float("inf")  # a check "just now" passed: the age bound alone would skip
    switched: list[object] = []
    monkeypatch.setattr(switcher, "switch", lambda *a, **k: switched.append(a))
    s = Settings(source=["x"], collection="c")
    alone = switcher.Switcher(s, Plan("c", "c", "c--v1"), ckpt)
    alone.sink = object()  # type: ignore[assignment]
    with pytest.raises(Superseded):
        alone.ready()
    assert switched == []
    # --switch-on-order: the ordered switch checks the fence right before, too
    ordered = switcher.Switcher(
        s.model_copy(update={"switch_on_order": True}), Plan("c", "c", "c--v1"), ckpt
    )
    ordered.sink = object()  # type: ignore[assignment]
    cp.build = BuildState(active="c", target="c--v1", digest="d1", ready_at=datetime.now(UTC))
    (tmp_path / "checkpoint.json.orders.json").write_text('{"switch": "d1"}')
    with pytest.raises(Superseded):
        ordered.poll()
    assert switched == []
    fence.write_text("1")  # not superseded: the same switch goes ahead
    alone.ready()
    assert len(switched) == 1
