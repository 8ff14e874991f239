"""The importer verifies its own store (``importer.selfcheck``) and records the result in its
checkpoint, and a crash between saving a shrunk file's lower state and deleting its leftover
points never leaves the manifest ahead of the points (real model, real Qdrant Edge)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
from pathlib import Path
from typing import Any

from conftest import BIN, Workspace, env_with, make_corpus, sentence

from devcluster.testing import wait_for
from eio_common.contract import Checkpoint, VerifyResult, point_id
from importer.sink import open_sink

DOCS = "docs-0.jsonl"


def _corpus(root: Path) -> Workspace:
    src = make_corpus(
        root, conversations=1, turns=6, jsonl_files=1, records=6, markdown=1, broken=False
    )
    return Workspace(root, src)


def _verify_result(ws: Workspace) -> VerifyResult:
    got = Checkpoint.from_json(ws.checkpoint.read_text()).verify
    assert got is not None, ws.checkpoint.read_text()
    return got


def test_one_shot_run_records_a_clean_verify_then_the_damage(tmp_path: Path) -> None:
    ws = _corpus(tmp_path)
    r = ws.run()
    assert r.returncode == 0, r.stderr
    first = _verify_result(ws)
    assert first.clean, first
    assert first.damage == 0, first
    assert first.points == len(ws.points()) > 0
    assert first.entries == first.files == len(ws.file_states())

    # damage by hand: three points of a file the manifest says are stored
    sink = open_sink(None, None, str(ws.qdrant), "test", False, 0, manifest=True)
    try:
        sink.delete([point_id(DOCS, i) for i in (0, 1, 2)])
        sink.sync()
    finally:
        sink.close()
    r = ws.run()  # nothing changed in the tree: the verify at its end finds the damage
    assert r.returncode == 0, r.stderr
    second = _verify_result(ws)
    assert not second.clean, second
    assert second.counts["missing_points"] == 3, second
    assert second.damage == 3
    assert second.names == {"missing_points": [DOCS]}
    assert second.at > first.at
    assert "run embedding-importer verify --repair" in r.stderr


def test_verify_off_leaves_the_checkpoint_without_a_result(tmp_path: Path) -> None:
    ws = _corpus(tmp_path)
    r = ws.run("--verify-interval-seconds", "0")
    assert r.returncode == 0, r.stderr
    assert "verify" not in ws.checkpoint_json()


def test_follower_verifies_at_catch_up_and_then_on_its_interval(tmp_path: Path) -> None:
    ws = _corpus(tmp_path)
    p = ws.popen("--follow", "--poll-interval", "0.5", "--verify-interval-seconds", "1")
    try:

        def verified() -> VerifyResult | None:
            assert p.poll() is None, p.communicate()[1]
            try:
                return Checkpoint.from_json(ws.checkpoint.read_text()).verify
            except (OSError, ValueError):
                return None

        first = wait_for(verified, 180, "a first verify of the follower", 0.2)
        assert first.clean, first
        assert first.points > 0

        def newer() -> VerifyResult | None:
            v = verified()
            return v if v is not None and v.at > first.at else None

        later = wait_for(newer, 60, "a second verify one interval later", 0.2)
        assert later.clean, later
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)


def _text(n: int) -> str:
    rnd = random.Random(7)
    return "\n\n".join(" ".join(sentence(rnd, 12) for _ in range(6)) for _ in range(n)) + "\n"


def _verify_json(ws: Workspace, *extra: str) -> tuple[int, dict[str, Any]]:
    args = [str(BIN), "verify", *ws.args()[2:], "--json", *extra]
    r = subprocess.run(args, env=env_with(None), capture_output=True, text=True, timeout=300)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else {"stderr": r.stderr})


def test_crash_between_lower_state_and_delete_leaves_no_entry_ahead(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    doc = src / "long.md"
    doc.write_text(_text(30))
    ws = Workspace(tmp_path, src)
    assert ws.run().returncode == 0
    before = ws.file_states()["long.md"].chunks
    doc.write_text(_text(6))  # truncated: the chunks past its new end are stale
    # the hook exits 137 (as a SIGKILL would) after the lower state was saved, before the
    # leftover points are deleted
    r = ws.run(env={"IMPORTER_FAULT_EXIT_BEFORE_STALE_DELETE": "true"})
    assert r.returncode == 137, r.stderr
    after = ws.file_states()["long.md"].chunks
    assert 0 < after < before, (before, after)
    code, out = _verify_json(ws)
    assert code == 3, out
    # the manifest is never ahead of the points: nothing it counts is missing
    assert out["counts"]["missing_points"] == 0, out
    assert out["counts"]["extra_points"] == before - after, out
    assert out["damage"] == before - after
    code, out = _verify_json(ws, "--repair")
    assert code == 0, out
    assert out["after"]["damage"] == 0, out
