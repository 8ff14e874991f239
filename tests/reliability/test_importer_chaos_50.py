"""Chaos, standalone: the importer SIGKILLed at 50 random moments across one import.

``tests/importer/test_importer_reliability.py`` kills 20 times at moments drawn over the whole
run (most land in start-up or between batches). This variant kills 50 times and aims at the
import loop: a third of the kills land at a random moment of start-up (model load, Qdrant
open), the rest at a random moment within the first one or two batches after the importer
logged that its loop started (one-batch windows, ``--sort-window 1``, so the checkpoint
advances between kills; the moment is tied to checkpoint writes, so a loaded machine does not
let a run finish the import). After the 50
kills one uninterrupted run finishes; the final point IDs, payloads and vectors must equal an
uninterrupted run's, and the checkpoint must never have gone backwards.
"""

from __future__ import annotations

import contextlib
import random
import re
import signal
import time
from pathlib import Path

import pytest
from reliability_lib import LineWatcher, importer_testlib

from devcluster.testing import wait_for
from eio_common.contract import Checkpoint

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.timeout(2400)]

lib = importer_testlib()
KILLS = 50
CORPUS = {
    "seed": 50,
    "conversations": 6,
    "turns": 24,
    "jsonl_files": 3,
    "records": 20,
    "markdown": 3,
}
ARGS = ("--batch-size", "4", "--sort-window", "1", "--checkpoint-interval", "0.2", "--threads", "1")
LOOP_MARKER = "shard 0/1:"  # logged once the model is loaded and Qdrant is open


def _wait_for_write(path: Path, p: object, timeout: float) -> None:
    """Until the checkpoint file is replaced once more (or the process ends)."""
    before = path.stat().st_mtime_ns if path.exists() else 0

    def ended_or_written() -> bool:
        return p.poll() is not None or (  # type: ignore[attr-defined]
            path.exists() and path.stat().st_mtime_ns != before
        )

    with contextlib.suppress(TimeoutError):  # no write in time: kill wherever it is
        wait_for(ended_or_written, timeout, "a checkpoint write", interval=0.01)


def test_sigkill_50_random_moments_equals_uninterrupted(tmp_path: Path) -> None:
    ref = lib.Workspace(tmp_path / "ref", lib.make_corpus(tmp_path / "ref", **CORPUS))
    t = time.monotonic()
    r = ref.run(*ARGS)
    assert r.returncode == 0, r.stderr
    m = re.search(r"in ([\d.]+)s of import loop", r.stderr)
    loop_ref = float(m.group(1)) if m else 20.0
    print(f"uninterrupted run: {time.monotonic() - t:.1f}s ({loop_ref:.1f}s of import loop)")

    ws = lib.Workspace(tmp_path / "chaos", lib.make_corpus(tmp_path / "chaos", **CORPUS))
    rnd = random.Random(20261121)
    # ~35 kills inside the loop, each within a batch or two of its start, so the import is
    # still unfinished after the 50th kill; start-up kills at a random share of the start-up
    # time seen so far (the time from spawn to the loop marker)
    in_loop_max = 0.3
    startup_seen: list[float] = []
    kills = {"start-up": 0, "loop": 0}
    marks: list[tuple[int, int, int]] = []
    mid_file = 0
    attempts: list[int] = []
    started = time.monotonic()
    for i in range(KILLS):
        if ws.checkpoint.exists() and Checkpoint.from_json(ws.checkpoint.read_text()).complete:
            break  # finished between kills: later runs would have nothing to do
        p = ws.popen(*ARGS)
        spawned = time.monotonic()
        assert p.stderr is not None
        watch = LineWatcher(p.stderr, LOOP_MARKER)
        if startup_seen and rnd.random() < 1 / 3:
            where = "start-up"
            typical = sorted(startup_seen)[len(startup_seen) // 2]
            time.sleep(rnd.uniform(0.1, 0.9) * typical)  # deliberate: a random kill moment
            if watch.seen.is_set():
                where = "loop"  # start-up was quicker this time
        else:
            where = "loop"
            if not watch.wait(120):
                p.kill()
                pytest.fail(f"run {i}: loop never started:\n{watch.join()}")
            startup_seen.append(time.monotonic() - spawned)
            # a random moment within the next one or two batches: after 0 or 1 further
            # checkpoint writes (one per acknowledged batch at --checkpoint-interval 0.2) plus a
            # random fraction of a batch, so a loaded machine does not stretch it
            for _ in range(rnd.randint(0, 1)):
                _wait_for_write(ws.checkpoint, p, 30)
            time.sleep(rnd.uniform(0.0, in_loop_max))  # deliberate: a random kill moment
        if p.poll() is not None:
            # finished on its own before the kill: the import is complete, nothing to kill
            out = watch.join()
            assert p.returncode == 0, (i, p.returncode, out)
            break
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        watch.join()
        assert p.returncode == -signal.SIGKILL
        kills[where] += 1
        if ws.checkpoint.exists():
            cp = Checkpoint.from_json(ws.checkpoint.read_text())
            states = ws.file_states().values() if ws.qdrant.exists() else []
            mid_file += any(st.chunks and not st.complete for st in states)
            marks.append(cp.work_mark())
            attempts.append(cp.attempt)
    chaos_seconds = time.monotonic() - started
    total = sum(kills.values())
    r = ws.run(*ARGS)
    assert r.returncode == 0, r.stderr
    final = Checkpoint.from_json(ws.checkpoint.read_text())
    ref_cp = Checkpoint.from_json(ref.checkpoint.read_text())
    points, ref_points = ws.points(), ref.points()
    worst = lib.assert_same_points(points, ref_points)
    print(
        f"kills survived: {total} ({kills['start-up']} in start-up, {kills['loop']} in the loop,"
        f" {mid_file} left a file half done) in {chaos_seconds:.0f}s; progress marks "
        f"{marks[0] if marks else None} -> {marks[-1] if marks else None}; final run attempt "
        f"{final.attempt}; points {len(points)} == {len(ref_points)}, max|dv| {worst:.1e}"
    )
    assert total >= KILLS - 5, kills  # (only fewer if the import finished between kills)
    assert kills["loop"] >= 25, kills
    assert mid_file >= 5, "kills must leave files half done to exercise the resume cursor"
    assert marks == sorted(marks), "the checkpoint went backwards"
    assert marks[-1] > marks[0], "the killed runs made progress"
    assert final.complete
    assert final.files_done == ref_cp.files_done == ref_cp.files_total
    assert final.counters.points >= ref_cp.counters.points  # a redone chunk may count twice
    assert final.counters.skipped.keys() == ref_cp.counters.skipped.keys()
