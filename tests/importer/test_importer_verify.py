"""``embedding-importer verify [--repair]`` on a real import (real model, real Qdrant Edge): a
store damaged by hand is found kind by kind, and the repair makes it equal to a fresh import
of the same tree while embedding only the damaged files again."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

from conftest import BIN, Workspace, assert_same_points, env_with, make_corpus

from devcluster.testing import wait_for
from eio_common.contract import Checkpoint, point_id
from importer.holder import holder_url
from importer.sink import open_sink
from importer.verify import EXIT_DAMAGE, EXIT_HELD

CONV = "conversations/conv-01.jsonl"  # its manifest entry is altered
DOCS = "docs-0.jsonl"  # three of its points are deleted
NOTES = "notes-1.md"  # two points beyond its chunk count are added


def _small(root: Path) -> Workspace:
    src = make_corpus(
        root, conversations=2, turns=8, jsonl_files=1, records=6, markdown=2, broken=False
    )
    ws = Workspace(root, src)
    r = ws.run()
    assert r.returncode == 0, r.stderr
    return ws


def _verify(ws: Workspace, *extra: str) -> tuple[int, dict[str, Any], str]:
    args = [str(BIN), "verify", *ws.args()[2:], "--json", *extra]
    r = subprocess.run(args, env=env_with(None), capture_output=True, text=True, timeout=300)
    out = json.loads(r.stdout) if r.stdout.strip() else {}
    return r.returncode, out, r.stderr


def _damage(ws: Workspace) -> None:
    """Points deleted, stray points added (unknown source, a payload that does not give its
    ID, beyond a file's chunk count) and a manifest entry altered (same mtime, other size)."""
    states = ws.file_states()
    sink = open_sink(None, None, str(ws.qdrant), "test", False, 0, manifest=True)
    try:
        sink.delete([point_id(DOCS, i) for i in (0, 2, 3)])
        vec = [[0.1] * 384]
        n = states[NOTES].chunks
        strays = [("nowhere/gone.md", 0), ("nowhere/gone.md", 1), (NOTES, n), (NOTES, n + 1)]
        for src, i in strays:
            sink.upsert([point_id(src, i)], vec, [{"source": src, "chunk_index": i}])
        sink.upsert([str(uuid.uuid4())], vec, [{"source": NOTES, "chunk_index": 0}])
        conv = states[CONV]
        sink.save_manifest([conv.model_copy(update={"size": conv.size + 7})])
        sink.sync()
    finally:
        sink.close()


def test_verify_finds_each_kind_and_repair_equals_a_fresh_import(tmp_path: Path) -> None:
    ws, fresh = _small(tmp_path / "damaged"), _small(tmp_path / "fresh")
    code, clean, _ = _verify(ws)
    assert code == 0, clean
    assert clean["damage"] == 0, clean
    assert clean["points"] == len(fresh.points())

    _damage(ws)
    code, found, err = _verify(ws)
    assert code == EXIT_DAMAGE, err
    kinds = {"missing_points": 3, "extra_points": 2, "orphan_points": 3, "stale_manifest": 1}
    assert {k: found["counts"][k] for k in kinds} == kinds, found
    assert found["damage"] == 9
    assert found["names"]["missing_points"] == [DOCS]
    assert found["names"]["extra_points"] == [NOTES]
    assert found["names"]["stale_manifest"] == [CONV]
    assert not any(found["counts"][k] for k in ("unknown_files", "changed_files", "gone_files"))

    code, repaired, err = _verify(ws, "--repair")
    assert code == 0, err
    r = repaired["repair"]
    assert r["imported"] == sorted([CONV, DOCS]), r
    assert r["deleted"] == 5, r
    want = fresh.file_states()
    # only the two damaged files were read and embedded again, each as a whole
    assert r["changes"] == {"rewritten": 2}, r
    assert r["chunks_embedded"] == want[CONV].chunks + want[DOCS].chunks, r
    assert repaired["after"]["damage"] == 0, repaired["after"]

    assert_same_points(ws.points(), fresh.points())
    got = ws.file_states()
    assert {s: (st.size, st.chunks, st.complete) for s, st in got.items()} == {
        s: (st.size, st.chunks, st.complete) for s, st in want.items()
    }
    assert _verify(ws)[0] == 0


def test_verify_reads_through_a_follower_and_repair_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "live"
    ws = Workspace(root, make_corpus(root, conversations=1, turns=4, jsonl_files=1, records=3,
                                     markdown=0, broken=False))  # fmt: skip
    p = ws.popen("--follow", "--poll-interval", "0.5")
    try:

        def synced() -> bool:
            assert p.poll() is None, p.communicate()[1]
            try:
                return Checkpoint.from_json(ws.checkpoint.read_text()).synced
            except (OSError, ValueError):
                return False

        wait_for(synced, 180, "the follower caught up", 0.2)
        url = holder_url(str(ws.qdrant))
        assert url is not None
        code, out, err = _verify(ws)
        assert code == 0, (out, err)
        assert out["store"] == url  # read through the follower's read API
        assert (out["damage"], out["entries"]) == (0, 2), out
        assert out["points"] == Checkpoint.from_json(ws.checkpoint.read_text()).counters.points
        code, out, err = _verify(ws, "--repair")
        assert code == EXIT_HELD, (out, err)
        assert out == {}
        assert f"held by an importer (it serves reads at {url})" in err
        assert "stop that importer first" in err
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
