"""``run --rebuild`` on a real import (real model, real Qdrant Edge): a new version of the
collection is filled beside the current one while reads see only the current one, and when it
is complete (one-shot) or caught up (``--follow``) readers switch to it in one step; the
result equals a fresh import with the new settings, and the old version is deleted (or kept
with ``--keep-old-versions``)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from conftest import BIN, Workspace, assert_same_points, env_with, make_corpus

from devcluster.testing import wait_for
from eio_common.contract import EXIT_CONFIG, EXIT_TEMPFAIL, Checkpoint, active_pointer_file
from importer.holder import holder_url
from importer.sink import open_sink


def _ws(root: Path, chunk: str = "120", tail: bool = False) -> Workspace:
    src = make_corpus(
        root, conversations=1, turns=6, jsonl_files=1, records=4, markdown=2, broken=False
    )
    if tail:  # a last line without newline: --follow waits --settle-seconds before reading it
        (src / "tail.jsonl").write_text(json.dumps({"text": "a record still being written"}))
    ws = Workspace(root, src)
    r = ws.run("--chunk-size", chunk)
    assert r.returncode == 0, r.stderr
    return ws


def _active(ws: Workspace) -> str | None:
    f = ws.qdrant / active_pointer_file("test")
    return str(json.loads(f.read_text())["active"]) if f.exists() else None


def _searched_ids(ws: Workspace) -> set[str]:
    args = [str(BIN), "search", "--qdrant-path", str(ws.qdrant), "--collection", "test"]
    r = subprocess.run(
        [*args, "memory leak onnx", "--limit", "500", "--json"],
        env=env_with(None), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return {json.loads(line)["id"] for line in r.stdout.splitlines()}


def _embedded(ws: Workspace, *extra: str) -> tuple[subprocess.CompletedProcess[str], int]:
    report = ws.root / "report.json"
    r = ws.run("--report", str(report), *extra)
    return r, int(json.loads(report.read_text())["chunks_embedded"]) if report.exists() else -1


def test_rebuild_resumes_then_switches_to_what_a_fresh_import_makes(tmp_path: Path) -> None:
    ws, fresh = _ws(tmp_path / "a"), _ws(tmp_path / "fresh", chunk="60")
    old = ws.points()
    assert set(old) != set(fresh.points())  # the two chunk sizes cut differently

    # interrupted after one file: readers (search, export, verify: open_sink) see only the old
    r = ws.run("--chunk-size", "60", "--rebuild", "--recycle-every-files", "1")
    assert r.returncode == EXIT_TEMPFAIL, r.stderr
    assert (ws.qdrant / "test--v1").is_dir()
    assert _active(ws) is None
    assert_same_points(ws.points(), old)
    assert _searched_ids(ws) == set(old)
    build = Checkpoint.from_json(ws.checkpoint.read_text()).build  # what the operator shows
    assert build is not None
    assert (build.active, build.target) == ("test", "test--v1")
    assert build.differences == ["chunk size 120 -> 60"]

    r = ws.run("--chunk-size", "60", "--rebuild")
    assert r.returncode == 0, r.stderr
    assert "rebuild of test: resuming version test--v1" in r.stderr, r.stderr
    assert "readers now see version test--v1; deleted test" in r.stderr, r.stderr
    assert _active(ws) == "test--v1"
    assert_same_points(ws.points(), fresh.points())
    assert _searched_ids(ws) <= set(fresh.points())
    assert not (ws.qdrant / "test").exists()
    assert not (ws.qdrant / "test-files").exists()
    build = Checkpoint.from_json(ws.checkpoint.read_text()).build
    assert build is not None
    assert build.switched_at is not None
    assert (build.active, build.target, build.differences) == ("test--v1", None, [])

    # without --rebuild a run imports into the active version (and checks its identity)
    r, embedded = _embedded(ws, "--chunk-size", "60")
    assert (r.returncode, embedded) == (0, 0), r.stderr
    r, embedded = _embedded(ws, "--chunk-size", "60", "--rebuild")  # nothing to rebuild
    assert (r.returncode, embedded) == (0, 0), r.stderr
    assert _active(ws) == "test--v1"
    assert ws.run("--chunk-size", "80").returncode == EXIT_CONFIG

    r = ws.run("--chunk-size", "80", "--rebuild", "--keep-old-versions", "1")
    assert r.returncode == 0, r.stderr
    assert _active(ws) == "test--v2"
    assert (ws.qdrant / "test--v1").is_dir()  # kept
    verify = [str(BIN), "verify", *ws.args()[2:], "--chunk-size", "80", "--json"]
    v = subprocess.run(verify, env=env_with(None), capture_output=True, text=True, timeout=300)
    assert v.returncode == 0, v.stdout + v.stderr  # the active version: built with 80, whole
    assert json.loads(v.stdout)["points"] == len(ws.points())
    assert set(ws.points()) != set(fresh.points())


def _through_api(ws: Workspace) -> dict[str, dict[str, Any]]:
    sink = open_sink(None, None, str(ws.qdrant), "test", False, 0)
    try:
        assert sink.where.startswith("http://"), sink.where  # read through the holder
        return {p.id: p.payload for p in sink.scroll(with_vectors=False)}
    finally:
        sink.close()


def test_follow_rebuild_serves_the_old_version_until_caught_up(tmp_path: Path) -> None:
    ws = _ws(tmp_path / "a", tail=True)
    old = {k: v[1] for k, v in ws.points().items()}
    chunks_before = Checkpoint.from_json(ws.checkpoint.read_text()).counters.chunks
    growing = ws.src / "growing.md"
    growing.write_text("# Notes\n\n")
    done = threading.Event()

    def write_on() -> None:  # written every 0.3 s, it never settles (2 s): not caught up
        while not done.wait(0.3):
            with open(growing, "a") as f:
                f.write("more words about memory ")

    writer = threading.Thread(target=write_on, daemon=True)
    writer.start()
    p = ws.popen(
        "--chunk-size", "60", "--rebuild", "--follow", "--poll-interval", "0.3",
        "--settle-seconds", "2",
    )  # fmt: skip
    try:

        def rebuilding() -> bool:
            assert p.poll() is None, p.communicate()[1]
            cp = Checkpoint.from_json(ws.checkpoint.read_text())
            return cp.counters.chunks > chunks_before and holder_url(str(ws.qdrant)) is not None

        wait_for(rebuilding, 180, "the rebuild embedded chunks and serves reads", 0.2)
        assert _through_api(ws) == old  # the new version's points are not visible
        assert _active(ws) is None
        done.set()
        writer.join()
        with open(ws.src / "tail.jsonl", "a") as f:  # the last line is complete
            f.write("\n")
        wait_for(lambda: _active(ws) == "test--v1", 180, "the switch to test--v1", 0.2)
        new = _through_api(ws)
    finally:
        done.set()
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=60)[1]
        print(err[-6000:])
    assert "readers now see version test--v1; deleted test" in err, err
    fresh = _ws(tmp_path / "fresh", chunk="60", tail=True)
    with open(fresh.src / "tail.jsonl", "a") as f:
        f.write("\n")
    (fresh.src / "growing.md").write_text(growing.read_text())
    assert fresh.run("--chunk-size", "60").returncode == 0
    assert new == {k: v[1] for k, v in fresh.points().items()}
    assert_same_points(ws.points(), fresh.points())
