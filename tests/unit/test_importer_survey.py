"""What ``verify`` finds (importer.survey), kind by kind, on real files, no model, no store."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from eio_common.contract import Cursor, FileState, head_hash, point_id
from importer.sink import StoredPoint
from importer.sources import SourceFile
from importer.survey import Findings, survey


def _file(root: Path, name: str, text: str = "one\ntwo\n") -> SourceFile:
    p = root / name
    p.write_text(text)
    return SourceFile(str(p), name)


def _state(sf: SourceFile, chunks: int = 2, **update: object) -> FileState:
    data = Path(sf.path).read_bytes()
    st = FileState(
        sid=sf.source_id,
        head=head_hash(data[:1024]),
        head_len=min(len(data), 1024),
        size=len(data),
        mtime_ns=os.stat(sf.path).st_mtime_ns,
        chunks=chunks,
        cursor=Cursor(offset=1, chunk=max(chunks - 1, 0)),
        complete=True,
    )
    return st.model_copy(update=update)


def _entry(st: FileState) -> StoredPoint:
    return StoredPoint("m", None, {"sid": st.sid, "state": st.model_dump_json()})


def _points(sid: str, indices: range) -> list[StoredPoint]:
    return [StoredPoint(point_id(sid, i), None, {"source": sid, "chunk_index": i}) for i in indices]


def _survey(
    files: list[SourceFile], states: list[FileState], points: list[StoredPoint]
) -> Findings:
    return survey(files, [_entry(s) for s in states], points)


def test_an_import_as_written_is_clean(tmp_path: Path) -> None:
    a = _file(tmp_path, "a.txt")
    f = _survey([a], [_state(a)], _points("a.txt", range(2)))
    assert f.damage == 0
    assert (f.tree, f.entries, f.points) == (1, 1, 2)
    assert not f.delete
    assert not f.reset


def test_missing_extra_and_orphan_points(tmp_path: Path) -> None:
    a, b = _file(tmp_path, "a.txt"), _file(tmp_path, "b.txt")
    stray = StoredPoint(str(uuid.uuid4()), None, {"source": "a.txt", "chunk_index": 0})
    points = [
        *_points("a.txt", range(1, 4)),  # 0 missing, 2 and 3 beyond the count
        *_points("b.txt", range(2)),
        *_points("elsewhere.txt", range(1)),  # in neither the tree nor the manifest
        stray,  # its payload does not give its ID
    ]
    f = _survey([a, b], [_state(a), _state(b)], points)
    assert f.counts["missing_points"] == 1
    assert f.counts["extra_points"] == 2
    assert f.counts["orphan_points"] == 2
    assert f.damage == 5
    assert f.reset == {"a.txt": 2}  # imported again; b is left alone
    assert set(f.delete) == {point_id("a.txt", 2), point_id("a.txt", 3)} | {
        point_id("elsewhere.txt", 0),
        stray.id,
    }


def test_points_of_a_file_not_in_the_manifest_yet_are_extra_not_orphan(tmp_path: Path) -> None:
    """A run killed before its first file state was written leaves such points."""
    a = _file(tmp_path, "a.txt")
    f = _survey([a], [], _points("a.txt", range(2)))
    assert f.counts["unknown_files"] == 1
    assert f.counts["extra_points"] == 2
    assert f.counts["orphan_points"] == 0


def test_entries_that_disagree_with_the_tree_or_with_themselves(tmp_path: Path) -> None:
    files = [_file(tmp_path, n) for n in ("size.txt", "head.txt", "cursor.txt", "bad.txt")]
    size, head, cursor, _bad = files
    states = [
        _state(size, size=3),  # same mtime, other size
        _state(head, head=head_hash(b"other")),
        _state(cursor, chunks=5, cursor=Cursor(chunk=1)),  # chunk count altered
    ]
    entries = [_entry(s) for s in states] + [StoredPoint("m", None, {"sid": "bad.txt"})]
    points = [p for s in states for p in _points(s.sid, range(s.chunks))]
    f = survey(files, entries, points)
    assert f.counts["stale_manifest"] == 4
    assert sorted(f.names["stale_manifest"]) == ["bad.txt", "cursor.txt", "head.txt", "size.txt"]
    assert f.reset == {"size.txt": 2, "head.txt": 2, "cursor.txt": 5, "bad.txt": 0}
    assert f.counts["missing_points"] == 0


def test_changes_not_imported_yet_are_reported_not_damage(tmp_path: Path) -> None:
    a, b, c = (_file(tmp_path, n) for n in ("appended.txt", "partial.txt", "new.txt"))
    states = [_state(a), _state(b, complete=False, cursor=Cursor(chunk=2))]
    os.utime(a.path, ns=(0, os.stat(a.path).st_mtime_ns + 10**9))
    gone = _state(a).model_copy(update={"sid": "gone.txt"})
    points = [p for s in [*states, gone] for p in _points(s.sid, range(2))]
    f = _survey([a, b, c], [*states, gone], points)
    assert f.damage == 0
    assert f.counts["changed_files"] == 2
    assert f.counts["unknown_files"] == 1
    assert f.counts["gone_files"] == 1
    assert f.gone == {"gone.txt"}


def test_only_this_shards_files_and_points_count(tmp_path: Path) -> None:
    a = _file(tmp_path, "a.txt")
    other = _points("b.txt", range(3))  # another shard's, in a shared collection
    f = survey([a], [_entry(_state(a))], _points("a.txt", range(2)) + other, lambda s: s != "b.txt")
    assert f.damage == 0
    assert f.points == 2
