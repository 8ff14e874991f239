"""Qdrant unreachable for a while, standalone.

Server mode (``--qdrant-url``): against ``qdrant_shim.QdrantShim`` (real HTTP, real
qdrant-client on both sides, NOT a real Qdrant server: there is no server binary here). The
importer imports part of the corpus, then the server refuses connections for a while and
answers 503 for a while; the importer must log why it waits, keep its heartbeat fresh, lose no
progress, resume by itself when the server is back, and end with exactly the points of an
uninterrupted run. The API key reaches the server and is never logged.
(``tests/importer/test_importer_qdrant_down.py`` covers a server that never comes back and the
SIGTERM while waiting.)

Embedded mode (``--qdrant-path``): "unreachable" is the store being held by another process
(Qdrant Edge, like any embedded engine, allows one process per store). The importer waits with
backoff, says why in its heartbeat (``waiting``) and resumes by itself once the store is free:
an old pod that has not exited yet must not fail the import with exit 78. No progress is lost:
the final points equal an uninterrupted run's.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from qdrant_shim import QdrantShim
from reliability_lib import LineWatcher, importer_testlib

from devcluster.testing import free_port, wait_for
from eio_common.contract import Checkpoint

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

lib = importer_testlib()
CORPUS = {
    "seed": 11,
    "conversations": 3,
    "turns": 16,
    "jsonl_files": 2,
    "records": 12,
    "markdown": 2,
}
ARGS = ("--batch-size", "4", "--sort-window", "1", "--checkpoint-interval", "0.3", "--threads", "1")


def _cp(ws: object) -> Checkpoint | None:
    path: Path = ws.checkpoint  # type: ignore[attr-defined]
    return Checkpoint.from_json(path.read_text()) if path.exists() else None


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> object:
    root = tmp_path_factory.mktemp("outage-ref")
    ref = lib.Workspace(root, lib.make_corpus(root, **CORPUS))
    r = ref.run(*ARGS)
    assert r.returncode == 0, r.stderr
    return ref


def test_server_refusing_then_503_then_back_resumes_without_loss(
    tmp_path: Path, reference: object
) -> None:
    key = "shim-key-" + secrets.token_hex(12)
    port = free_port()
    shim = QdrantShim(port, tmp_path / "server-storage", api_key=key).start()
    ws = lib.Workspace(tmp_path, lib.make_corpus(tmp_path, **CORPUS))
    p = ws.popen(*ARGS, "--qdrant-url", shim.url, env={"IMPORTER_QDRANT_API_KEY": key})
    assert p.stderr is not None
    watch = LineWatcher(p.stderr, "unreachable")
    try:
        # 1. some progress against the live server
        def progressed() -> Checkpoint | None:
            assert p.poll() is None, watch.join()
            cp = _cp(ws)
            return cp if cp is not None and cp.counters.points >= 12 else None

        before = wait_for(progressed, 240, "progress before the outage", interval=0.2)
        # 2. connection refused until the importer has said so twice and kept its heartbeat
        # fresh while waiting (every sample on the way: no progress lost, no giving up)
        shim.stop()
        t_out = time.monotonic()
        assert watch.wait(60), "the importer never said that Qdrant is unreachable"

        def waited_with_heartbeat() -> bool:
            cp = _cp(ws)
            assert cp is not None
            assert cp.work_mark() >= before.work_mark(), "progress lost while waiting"
            assert p.poll() is None, "the importer gave up while Qdrant was unreachable"
            refused = sum("unreachable" in ln for ln in watch.lines)
            return refused >= 2 and cp.heartbeat.time > before.heartbeat.time

        wait_for(waited_with_heartbeat, 120, "a heartbeat while Qdrant is unreachable", 1)
        # 3. back, but overloaded: 503 until the importer has seen one
        seen = len(watch.lines)
        shim.fail_with = 503
        shim.start()
        wait_for(lambda: any("503" in ln for ln in watch.lines[seen:]), 120, "a 503 logged")
        shim.fail_with = None
        outage = time.monotonic() - t_out
        refused_lines = sum("unreachable" in ln for ln in watch.lines)
        # 4. back for good: the importer resumes by itself and finishes
        p.wait(300)
        out = watch.join()
        assert p.returncode == 0, out
        points = shim.points("test")
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shim.close()
    final = _cp(ws)
    assert final is not None
    assert final.complete
    assert "503" in out, "the 503 phase was not seen by the importer"
    assert key not in out
    assert shim.keys_seen == {key}, "every request carried the API key from the environment"
    worst = lib.assert_same_points(points, reference.points())  # type: ignore[attr-defined]
    assert final.counters.points >= len(points)
    print(
        f"server outage: refused + 503 for {outage:.0f}s in total, {refused_lines} wait "
        f"lines logged; progress before {before.work_mark()}, points {len(points)} == "
        f"reference, max|dv| {worst:.1e}, {shim.requests} requests all with the key"
    )


def test_embedded_store_held_by_another_process_is_waited_for(
    tmp_path: Path, reference: object
) -> None:
    ws = lib.Workspace(tmp_path, lib.make_corpus(tmp_path, **CORPUS))
    r = ws.run(*ARGS, "--recycle-every-files", "3")
    assert r.returncode == 75, r.stderr
    before = _cp(ws)
    assert before is not None
    assert before.counters.points > 0
    # another process opens the store (a real Qdrant Edge shard) and holds it
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(ws.qdrant / "test")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    p = ws.popen(*ARGS, "--checkpoint-interval", "0.5")
    try:

        def waiting() -> str | None:
            assert p.poll() is None, "the importer gave up on a held store"
            cp = _cp(ws)
            return cp.heartbeat.waiting if cp is not None else None

        waiting = wait_for(waiting, 120, "the heartbeat saying why the importer waits", 0.2)
        assert "held by another process" in waiting
        t = time.monotonic()
        holder.communicate("", timeout=30)  # the other process lets go
        assert p.wait(300) == 0
        resumed_after = time.monotonic() - t
    finally:
        for proc in (p, holder):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    final = _cp(ws)
    assert final is not None
    assert final.complete
    assert final.heartbeat.waiting is None
    lib.assert_same_points(ws.points(), reference.points())  # type: ignore[attr-defined]
    print(f"held store: waited, said {waiting!r}; finished {resumed_after:.1f}s after release")


HOLD = """
import sys, qdrant_edge
shard = qdrant_edge.EdgeShard.load(sys.argv[1])
print("held", flush=True)
sys.stdin.read()
shard.close()
"""
