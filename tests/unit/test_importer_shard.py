"""Shard partition: deterministic, disjoint, complete, stable when files are added."""

from __future__ import annotations

from importer.sources import SourceFile, partition, shard_of


def _files(n: int, prefix: str = "f") -> list[SourceFile]:
    return sorted(
        (SourceFile(f"/x/{prefix}{i}", f"{prefix}{i}") for i in range(n)), key=lambda f: f.source_id
    )


def test_partition_disjoint_and_complete() -> None:
    files = _files(1000)
    parts = [partition(files, i, 4) for i in range(4)]
    ids = [f.source_id for p in parts for f in p]
    assert sorted(ids) == sorted(f.source_id for f in files)
    assert len(set(ids)) == len(ids)
    for p in parts:  # roughly balanced
        assert 180 < len(p) < 320
        assert p == sorted(p, key=lambda f: f.source_id)


def test_single_shard_is_everything() -> None:
    files = _files(10)
    assert partition(files, 0, 1) == files


def test_deterministic_and_stable_under_additions() -> None:
    files = _files(200)
    more = sorted(files + _files(50, "g"), key=lambda f: f.source_id)
    before = {f.source_id: shard_of(f.source_id, 3) for f in files}
    after = {f.source_id: shard_of(f.source_id, 3) for f in more}
    assert all(after[k] == v for k, v in before.items())
    assert shard_of("a/b.md", 7) == shard_of("a/b.md", 7)
