"""Checkpoint stores and merging: atomic file writes, never backwards, small for 100k files."""

from __future__ import annotations

import json
from pathlib import Path

from importer.checkpoint_store import FileStore, merge
from importer.contract import Checkpoint, Counters, encode_ranges, iter_ranges


def test_file_store_roundtrip_and_atomic(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "sub" / "ck.json"))
    assert store.load() is None
    cp = Checkpoint(files_total=3, done="0-1", offsets={2: 5}, chunk_offsets={2: 9})
    store.save(cp)
    loaded = store.load()
    assert loaded is not None
    assert loaded.offsets == {2: 5}
    assert loaded.chunk_offsets == {2: 9}
    assert loaded.files_done == 2
    # no temp files left behind
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["ck.json"]
    raw = json.loads((tmp_path / "sub" / "ck.json").read_text())
    assert raw["chunkOffsets"] == {"2": 9}


def test_merge_never_goes_backwards() -> None:
    ours = Checkpoint(
        files_digest="d",
        done="0-4",
        offsets={5: 3, 7: 1},
        chunk_offsets={5: 4},
        counters=Counters(files=5, chunks=10, points=10, skipped={"empty": 1}),
        attempt=2,
    )
    theirs = Checkpoint(
        files_digest="d",
        done="0-5",
        offsets={7: 9},
        chunk_offsets={7: 11},
        counters=Counters(files=6, chunks=12, points=12, skipped={"binary": 2}),
        attempt=1,
    )
    m = merge(ours, theirs)
    assert set(iter_ranges(m.done)) == set(range(6))
    assert m.offsets == {7: 9}
    assert m.chunk_offsets == {7: 11}
    assert (m.counters.files, m.counters.chunks) == (6, 12)
    assert m.counters.skipped == {"empty": 1, "binary": 2}
    assert m.attempt == 2


def test_checkpoint_for_100k_files_is_small() -> None:
    # what a run produces: a done prefix with a few stragglers in flight, counters, heartbeat
    done = set(range(73_211)) | {73_215, 73_300}
    cp = Checkpoint(
        files_total=100_000,
        files_digest="0123456789abcdef",
        done=encode_ranges(done),
        offsets={i: 123_456 for i in range(73_211, 73_260)},
        chunk_offsets={i: 654_321 for i in range(73_211, 73_260)},
        counters=Counters(
            files=73_213,
            records=10**9,
            chunks=10**9,
            points=10**9,
            skipped={f"reason_{i}": 10**6 for i in range(20)},
        ),
    )
    size = len(cp.to_json().encode())
    assert size < 100 * 1024, size
    assert Checkpoint.from_json(cp.to_json()).files_done == len(done)
