"""Checkpoint stores and merging: atomic file writes, never backwards, small for any size."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from eio_common.contract import Checkpoint, Counters, Cursor, FileState, Lag
from importer.checkpoint_store import FileStore, merge


def test_file_store_roundtrip_and_atomic(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "sub" / "ck.json"))
    assert store.load() is None
    cp = Checkpoint(files_total=3, files_done=2, lag=Lag(files=1, bytes=120), synced=False)
    store.save(cp)
    loaded = store.load()
    assert loaded is not None
    assert (loaded.files_done, loaded.lag.files, loaded.lag.bytes) == (2, 1, 120)
    # no temp files left behind
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["ck.json"]
    raw = json.loads((tmp_path / "sub" / "ck.json").read_text())
    assert raw["filesDone"] == 2
    assert raw["version"] == 2


def test_a_version_1_checkpoint_starts_the_shard_over(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    path.write_text(json.dumps({"version": 1, "done": "0-4", "offsets": {"5": 3}}))
    assert FileStore(str(path)).load() is None


def test_merge_never_goes_backwards() -> None:
    ours = Checkpoint(
        counters=Counters(files=5, chunks=10, points=10, skipped={"empty": 1}),
        attempt=2,
        lag=Lag(files=3),
    )
    theirs = Checkpoint(
        counters=Counters(files=6, chunks=12, points=12, deleted=4, skipped={"binary": 2}),
        attempt=1,
        peak_memory_bytes=99,
    )
    m = merge(ours, theirs)
    assert (m.counters.files, m.counters.chunks, m.counters.deleted) == (6, 12, 4)
    assert m.counters.skipped == {"empty": 1, "binary": 2}
    assert (m.attempt, m.peak_memory_bytes) == (2, 99)
    assert m.lag.files == 3  # the writer's view of the source
    assert m.work_mark() >= theirs.work_mark()
    assert m.work_mark() >= ours.work_mark()


def test_checkpoint_size_does_not_depend_on_the_number_of_files() -> None:
    big = 10**9
    cp = Checkpoint(
        files_total=100_000,
        files_done=73_211,
        lag=Lag(files=26_789, bytes=big, oldest=datetime.now(UTC)),
        manifest="http://qdrant:6333#conversations-files",
        counters=Counters(
            files=big,
            records=big,
            chunks=big,
            points=big,
            deleted=big,
            skipped={f"reason_{i}": 10**6 for i in range(20)},
        ),
    )
    size = len(cp.to_json().encode())
    assert size < 2048, size
    assert Checkpoint.from_json(cp.to_json()).files_done == 73_211


def test_a_file_state_is_a_few_hundred_bytes() -> None:
    st = FileState(
        sid="-home-user-src-project/0f4c1e9e-5b7a-4c1e-9a53-0c5e1d8b6a10.jsonl",
        head="0123456789abcdef",
        head_len=1024,
        size=52_428_800,
        mtime_ns=1_764_800_000 * 10**9,
        fmt="claude",
        chunks=40_000,
        cursor=Cursor(offset=52_000_000, line=9_000, record=9_000, chunk=39_999),
        last=Cursor(offset=51_990_000, line=8_998, record=8_998, chunk=39_998),
        tail="fedcba9876543210",
        complete=True,
    )
    assert len(st.model_dump_json().encode()) < 512
