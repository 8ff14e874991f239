"""End-to-end runs of the console script with the real model and real embedded Qdrant."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from conftest import BIN, Workspace, assert_same_points, env_with, make_corpus

from devcluster.testing import wait_for


def test_mixed_corpus_imports_and_counts_skips(reference: Workspace) -> None:
    ws = reference
    cp = ws.checkpoint_json()
    assert cp["complete"] is True
    assert cp["lastExit"] == "complete"
    n_files = 3 + 2 + 2 + 3  # conversations, jsonl, markdown, broken
    assert cp["filesTotal"] == n_files
    assert cp["filesDone"] == n_files
    assert cp["lag"] == {"files": 0, "bytes": 0}
    assert cp["synced"] is True
    skipped = cp["counters"]["skipped"]
    assert skipped["empty"] == 1
    assert skipped["binary"] == 1
    assert skipped["non_utf8"] == 1
    assert skipped["malformed_line"] == 3
    assert skipped["no_text_field"] == 2
    assert skipped["claude_tool_use_block"] == 3 * 8
    assert skipped["claude_thinking_block"] == 3 * 8
    assert skipped["claude_tool_result_block"] == 3
    points = ws.points()
    assert len(points) == cp["counters"]["points"] == cp["counters"]["chunks"]
    formats = {p["format"] for _, p in points.values()}
    assert formats == {"claude", "jsonl", "text"}
    conv = [p for _, p in points.values() if p["format"] == "claude"]
    assert conv
    assert all(p["session"].startswith("session-") for p in conv)
    assert all(p["role"] in ("user", "assistant", "mixed") for p in conv)
    assert {p["source"] for _, p in points.values()} == {
        "conversations/conv-00.jsonl",
        "conversations/conv-01.jsonl",
        "conversations/conv-02.jsonl",
        "docs-0.jsonl",
        "docs-1.jsonl",
        "notes-0.md",
        "notes-1.md",
    }
    for vec, _ in points.values():
        assert abs(float((vec**2).sum()) - 1.0) < 1e-3  # normalised


def test_second_run_is_idempotent_and_exits_0(tmp_path: Path, reference: Workspace) -> None:
    ws = Workspace(tmp_path, make_corpus(tmp_path))
    r = ws.run()
    assert r.returncode == 0, r.stderr
    assert "exit reason: complete" in r.stderr
    assert "skipped: binary=1" in r.stderr
    before = ws.points()
    assert_same_points(before, reference.points())
    # nothing changed: nothing to do, still exit 0, nothing embedded, nothing duplicated
    r = ws.run("--report", str(tmp_path / "report.json"))
    assert r.returncode == 0, r.stderr
    assert "nothing changed in the source since the last run" in r.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["chunks_embedded"], report["files_done"]) == (0, 0)
    assert len(ws.points()) == len(before)
    # losing the checkpoint loses nothing: per-file state lives beside the points
    ws.checkpoint.unlink()
    r = ws.run("--report", str(tmp_path / "report.json"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "report.json").read_text())["chunks_embedded"] == 0
    assert_same_points(ws.points(), before)


def test_recycle_every_files_exits_75_and_advances(tmp_path: Path, reference: Workspace) -> None:
    ws = Workspace(tmp_path, make_corpus(tmp_path))
    codes = []
    done_before = -1
    for _ in range(12):
        r = ws.run("--recycle-every-files", "3")
        codes.append(r.returncode)
        cp = ws.checkpoint_json()
        done = cp["counters"]["files"]
        assert done > done_before, "each run advances"
        done_before = done
        if r.returncode == 0:
            break
        assert r.returncode == 75, r.stderr
        assert cp["lastExit"] == "recycle"
    assert codes == [75, 75, 75, 0], codes
    assert_same_points(ws.points(), reference.points())


def test_sigterm_checkpoints_and_exits_75(tmp_path: Path, reference: Workspace) -> None:
    ws = Workspace(tmp_path, make_corpus(tmp_path))
    p = ws.popen("--batch-size", "4", "--checkpoint-interval", "0.5")

    # wait until it has made some progress
    def progressed() -> bool:
        return ws.checkpoint.exists() and ws.checkpoint_json()["counters"]["points"] > 0

    try:
        wait_for(progressed, 120, "some progress", interval=0.2)
    except TimeoutError:
        p.kill()
        raise
    t = time.monotonic()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    took = time.monotonic() - t
    assert p.returncode == 75, err
    assert took < 10, took
    cp = ws.checkpoint_json()
    assert cp["lastExit"] == "sigterm"
    assert cp["complete"] is False
    r = ws.run()
    assert r.returncode == 0, r.stderr
    assert_same_points(ws.points(), reference.points())


def test_status_command(reference: Workspace) -> None:
    r = subprocess.run(
        [str(BIN), "status", "--checkpoint", f"file:{reference.checkpoint}"],
        capture_output=True,
        text=True,
        env=env_with(None),
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "files 10/10 up to date (100.0%)" in r.stdout
    assert "complete: True" in r.stdout
    r = subprocess.run(
        [str(BIN), "status", "--json", "--checkpoint", f"file:{reference.checkpoint}"],
        capture_output=True,
        text=True,
        env=env_with(None),
        timeout=60,
    )
    assert json.loads(r.stdout)["complete"] is True
    r = subprocess.run(
        [str(BIN), "status", "--checkpoint", "file:/nonexistent/ck.json"],
        capture_output=True,
        text=True,
        env=env_with(None),
        timeout=60,
    )
    assert r.returncode == 1
