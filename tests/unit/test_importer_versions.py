"""importer.versions: version names, the embedded store's pointer file, and the plan/switch/
finish steps over the server side's calls (qdrant-client's in-process local mode: the same
alias API as a server; no Qdrant server runs in these tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models

from eio_common.contract import IDENTITY_POINT_ID, collection_version, version_collection
from importer.identity import from_settings, to_payload
from importer.settings import ConfigError, Settings
from importer.versions import (
    ServerVersions,
    edge_active,
    finish,
    plan,
    switch_alias,
    write_edge_pointer,
)


def test_version_names() -> None:
    assert version_collection("chats", 3) == "chats--v3"
    assert collection_version("chats", "chats") == 0
    assert collection_version("chats", "chats--v3") == 3
    for other in ("chats--v3-files", "chats--v03", "chats--v", "chatsx--v1", "chats-files"):
        assert collection_version("chats", other) is None, other


def test_edge_pointer_is_replaced_whole(tmp_path: Path) -> None:
    assert edge_active(str(tmp_path), "c") == "c"  # no pointer: the collection from before
    write_edge_pointer(str(tmp_path), "c", "c--v1")
    assert edge_active(str(tmp_path), "c") == "c--v1"
    write_edge_pointer(str(tmp_path), "c", "c--v2")
    assert edge_active(str(tmp_path), "c") == "c--v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.eio-active.json"]  # no temp left
    (tmp_path / "c.eio-active.json").write_text('{"active": "d--v1"}')
    with pytest.raises(ConfigError, match="no version of it"):
        edge_active(str(tmp_path), "c")


def _client(*names: str) -> QdrantClient:
    c = QdrantClient(":memory:")
    for n in names:
        c.create_collection(n, vectors_config=models.VectorParams(size=1, distance="Cosine"))
    return c


def _record(c: QdrantClient, physical: str, chunk_size: int) -> None:
    s = Settings(source=["x"], collection="t", chunk_size=chunk_size)
    payload = to_payload(from_settings(s, 384, 128, "ab"))
    c.upsert(f"{physical}-files", [models.PointStruct(id=IDENTITY_POINT_ID, vector=[1.0],
                                                      payload=payload)])  # fmt: skip


def test_server_rebuild_plan_switch_and_finish() -> None:
    c = _client("t", "t-files")
    _record(c, "t", 120)
    v = ServerVersions(c, "t")
    wanted = from_settings(Settings(source=["x"], collection="t", chunk_size=60), 384, 128, "ab")
    p = plan(v, wanted)
    assert (p.active, p.target, p.switching) == ("t", "t--v1", True)
    c.create_collection("t--v1", vectors_config=models.VectorParams(size=1, distance="Cosine"))
    c.create_collection(
        "t--v1-files", vectors_config=models.VectorParams(size=1, distance="Cosine")
    )
    _record(c, "t--v1", 60)
    assert plan(v, wanted) == p  # an unfinished version with these settings is resumed
    switch_alias(c, "t", "t--v1")  # the legacy collection goes, the alias takes its name
    assert v.active() == "t--v1"
    assert finish(v, p, keep=0) == []  # the legacy collection was deleted by the switch
    assert plan(v, wanted).switching is False  # the active version has these settings
    for name in ("t--v2", "t--v2-files"):
        c.create_collection(name, vectors_config=models.VectorParams(size=1, distance="Cosine"))
    _record(c, "t--v2", 60)
    switch_alias(c, "t", "t--v2")  # one update_collection_aliases call: delete + create
    assert v.active() == "t--v2"
    p2 = plan(v, wanted.model_copy(update={"chunk_size": 80}))
    assert p2.target == "t--v3"
    assert finish(v, p2, keep=1) == ["t--v1"]
    assert sorted(v.names().values()) == ["t--v2"]


def test_collection_without_identity_is_adopted_not_rebuilt() -> None:
    """An operator passes --rebuild to every run: a collection from before identities were
    recorded is adopted (the run records its settings), not rebuilt at the upgrade."""
    c = _client("t", "t-files")  # no identity entry in the manifest
    wanted = from_settings(Settings(source=["x"], collection="t", chunk_size=60), 384, 128, "ab")
    p = plan(ServerVersions(c, "t"), wanted)
    assert (p.active, p.target, p.switching) == ("t", "t", False)
    _record(c, "t", 120)  # once recorded, a change of settings is a rebuild
    p = plan(ServerVersions(c, "t"), wanted)
    assert (p.active, p.target, p.differences) == ("t", "t--v1", ("chunk size 120 -> 60",))


def test_new_collection_is_imported_under_its_plain_name() -> None:
    wanted = from_settings(Settings(source=["x"], collection="t"), 384, 128, "ab")
    p = plan(ServerVersions(_client(), "t"), wanted)
    assert (p.active, p.target, p.switching) == ("t", "t", False)
