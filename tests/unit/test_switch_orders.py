"""The coordinated switch of a rebuild with several shards (``--switch-on-order``): the orders
(file beside a file checkpoint), what a shard does on which order, what a restarted shard still
has to retire, the shared server collection (qdrant-client's local mode: the same calls as a
server), and a switch and retire by a shard that does not lead (a real Qdrant Edge store)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models

from eio_common.contract import (
    IDENTITY_POINT_ID,
    RETIRE_ANNOTATION,
    SWITCH_ANNOTATION,
    BuildState,
    Checkpoint,
)
from importer.builds import carried_retiring, retire, start_rebuild, switch
from importer.checkpoint_store import FileStore, Orders, orders_of
from importer.identity import digest, from_settings, to_payload
from importer.settings import ConfigError, Settings
from importer.sink import EdgeSink, Patience
from importer.switcher import leads, next_step, waiting
from importer.versions import Plan, ServerVersions, edge_active, plan

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_orders_file_beside_a_file_checkpoint(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "ckpt.json"))
    assert store.orders() == Orders()  # no file: no orders
    f = tmp_path / "ckpt.json.orders.json"
    f.write_text('{"switch": "ab12", "retire": ""}')
    assert store.orders() == Orders("ab12", None)
    f.write_text('{"switch": "ab12", "ret')  # half written: read again at the next poll
    assert store.orders() == Orders()
    f.write_text(json.dumps({"switch": "ab12", "retire": "ab12"}))
    assert store.orders() == Orders("ab12", "ab12")
    assert orders_of({"a": " x ", "b": 3}, "a", "b") == Orders("x", None)
    # a ConfigMap's annotations, as the operator writes them
    notes = {SWITCH_ANNOTATION: "ab12", RETIRE_ANNOTATION: "ab12", "other": "x"}
    assert orders_of(notes, SWITCH_ANNOTATION, RETIRE_ANNOTATION) == Orders("ab12", "ab12")


def test_a_shard_acts_only_on_orders_for_its_own_build() -> None:
    filling = BuildState(active="c", target="c--v1", digest="d1")
    ready = filling.model_copy(update={"ready_at": NOW})
    switched = BuildState(active="c--v1", digest="d1", retiring=["c"])
    done = BuildState(active="c--v1", digest="d1")
    both = Orders("d1", "d1")
    assert next_step(filling, True, both) is None  # not ready: no switch, even ordered
    assert next_step(ready, True, Orders()) is None  # ready, not ordered
    assert next_step(ready, True, Orders("d0", "d0")) is None  # another build's order
    assert next_step(ready, True, both) == "switch"
    assert next_step(switched, False, Orders("d1")) is None  # switched, no retire order yet
    assert next_step(switched, False, both) == "retire"
    assert next_step(done, False, both) is None
    assert next_step(None, True, both) is None
    assert [waiting(b, r) for b, r in ((filling, True), (ready, True), (switched, False))] == [
        False,
        True,
        True,
    ]
    assert not waiting(done, False)


def test_a_restarted_shard_still_retires_what_it_switched_from() -> None:
    switched = BuildState(active="c--v1", digest="d1", retiring=["c"])
    assert carried_retiring(switched, "c--v1") == ["c"]
    # stopped between the switch and its checkpoint: the checkpoint still says "filling"
    filling = BuildState(active="c", target="c--v1", digest="d1", ready_at=NOW)
    assert carried_retiring(filling, "c--v1") == ["c"]
    assert carried_retiring(BuildState(active="c--v1", digest="d1"), "c--v1") == []
    assert carried_retiring(None, "c") == []


def test_only_shard_0_of_a_server_moves_the_alias() -> None:
    s = Settings(source=["x"], collection="c", qdrant_url="http://q:6333", shard="1/2")
    assert not leads(s)
    assert leads(s.model_copy(update={"shard": "0/2"}))
    assert leads(Settings(source=["x"], collection="c", shard="1/2"))  # each store its own


def test_several_server_shards_rebuild_only_on_order() -> None:
    s = Settings(
        source=["x"], collection="c", qdrant_url="http://127.0.0.1:9", shard="1/2", rebuild=True
    )
    wanted = from_settings(s, 384, 128, "ab")
    with pytest.raises(ConfigError, match="--switch-on-order"):
        start_rebuild(s, wanted, Patience(lambda: True), Checkpoint(shard=1, shards=2))


def _create(c: QdrantClient, *names: str) -> None:
    for n in names:
        c.create_collection(n, vectors_config=models.VectorParams(size=1, distance="Cosine"))


def _record(c: QdrantClient, physical: str, chunk_size: int) -> None:
    s = Settings(source=["x"], collection="t", chunk_size=chunk_size)
    payload = to_payload(from_settings(s, 384, 128, "ab"))
    point = models.PointStruct(id=IDENTITY_POINT_ID, vector=[1.0], payload=payload)
    c.upsert(f"{physical}-files", [point])


def test_server_shards_sharing_a_collection_plan_the_same_version() -> None:
    c = QdrantClient(":memory:")
    _create(c, "t", "t-files")
    _record(c, "t", 120)
    wanted = from_settings(Settings(source=["x"], collection="t", chunk_size=60), 384, 128, "ab")
    first = plan(ServerVersions(c, "t"), wanted)
    assert first.target == "t--v1"
    _create(c, "t--v1", "t--v1-files")  # shard 0 created it, has not recorded its identity
    second = plan(ServerVersions(c, "t"), wanted)  # shard 1, later
    assert second == first  # the same version resumed, not dropped nor a v2
    _record(c, "t--v1", 60)
    assert plan(ServerVersions(c, "t"), wanted) == first
    assert first.active_digest == digest(
        from_settings(Settings(source=["x"], collection="t", chunk_size=120), 384, 128, "ab")
    )


def test_a_shard_that_does_not_lead_records_the_switch_and_moves_nothing(
    tmp_path: Path,
) -> None:
    s = Settings(source=["x"], collection="c", qdrant_path=str(tmp_path), keep_old_versions=0)
    for name in ("c", "c--v1"):
        EdgeSink(str(tmp_path), "c", True, 4, physical=name).close()
    p = Plan("c", "c", "c--v1")
    cp = Checkpoint(shard=1, shards=2)
    cp.build = BuildState(active="c", target="c--v1", digest="d1", ready_at=NOW)
    sink = EdgeSink(str(tmp_path), "c", True, 4, physical="c--v1", serve="c")
    try:
        switch(sink, p, s, cp, keep_old=True, leader=False)
        assert edge_active(str(tmp_path), "c") == "c"  # the pointer did not move
        assert cp.build is not None
        assert (cp.build.active, cp.build.target, cp.build.retiring) == ("c--v1", None, ["c"])
        assert cp.build.digest == "d1"
        assert cp.build.ready_at is None
        assert cp.build.switched_at is not None
        assert retire(sink, s, cp, leader=False) == []
        assert (tmp_path / "c").is_dir()  # only the leader deletes
        assert cp.build.retiring == []
        assert retire(sink, s, cp, leader=True) == ["c"]
        assert not (tmp_path / "c").exists()
    finally:
        sink.close()
