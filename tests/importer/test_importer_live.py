"""Live sources: files that grow, shrink, change and disappear between and during runs.

Every test ends by comparing the collection with a fresh one-shot import of the final tree
(same IDs, payloads and vectors, no stale points), and checks from the run reports that work
already done was not done again.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, assert_same_points, sentence

from devcluster.testing import wait_for
from eio_common.contract import Checkpoint

ARGS = ("--settle-seconds", "0", "--batch-size", "8")


def claude_line(rnd: random.Random, session: str, i: int, words: int | None = None) -> str:
    kind = "user" if i % 2 == 0 else "assistant"
    return json.dumps(
        {
            "type": kind,
            "sessionId": session,
            "uuid": f"{session}-{i}",
            "timestamp": f"2026-12-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "message": {"role": kind, "content": sentence(rnd, words or rnd.randint(4, 90))},
        }
    )


def write_session(path: Path, rnd: random.Random, session: str, turns: int, start: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for i in range(start, start + turns):
            f.write(claude_line(rnd, session, i) + "\n")


def conversations(root: Path, seed: int, projects: int = 2, sessions: int = 3) -> Path:
    rnd = random.Random(seed)
    src = root / "projects"
    for p in range(projects):
        for s in range(sessions):
            write_session(src / f"-home-u-proj{p}" / f"s{p}{s}.jsonl", rnd, f"s{p}{s}", 14)
    return src


def run(ws: Workspace, *extra: str, report: Path | None = None) -> dict[str, Any]:
    report = report or ws.root / "report.json"
    r = ws.run(*ARGS, "--report", str(report), *extra)
    assert r.returncode in (0, 75), r.stderr
    out: dict[str, Any] = json.loads(report.read_text())
    out["returncode"] = r.returncode
    return out


def fresh(tree: Path, tmp: Path) -> tuple[Workspace, dict[str, Any]]:
    """A one-shot import of ``tree`` as it is now, into a new store."""
    root = tmp / f"fresh-{time.monotonic_ns()}"
    shutil.copytree(tree, root / "src")
    ws = Workspace(root, root / "src")
    return ws, run(ws)


@pytest.fixture
def live(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path, conversations(tmp_path, seed=7))


def test_appended_record_embeds_only_the_chunks_it_changes(live: Workspace, tmp_path: Path) -> None:
    first = run(live)
    assert first["chunks_embedded"] > 20
    target = live.src / "-home-u-proj0" / "s00.jsonl"
    rnd = random.Random(1)
    with target.open("a") as f:
        f.write(claude_line(rnd, "s00", 100, words=12) + "\n")
    second = run(live)
    assert second["files_done"] == 1
    assert second["changes"] == {"appended": 1}
    assert 1 <= second["chunks_embedded"] <= 2  # the growing last chunk and/or a new one
    assert second["records"] == 1
    ref, _ = fresh(live.src, tmp_path)
    assert_same_points(live.points(), ref.points())
    # nothing changed since: nothing embedded
    assert run(live)["chunks_embedded"] == 0


def test_a_half_written_line_waits_for_its_newline(live: Workspace, tmp_path: Path) -> None:
    run(live)
    target = live.src / "-home-u-proj1" / "s10.jsonl"
    line = claude_line(random.Random(2), "s10", 200, words=20)
    p = live.popen(*ARGS, "--follow", "--settle-seconds", "600", "--checkpoint-interval", "0.3")
    try:
        cp = _wait_checkpoint(live, p, lambda c: c.follow and c.synced, 120)
        records = cp.counters.records
        with target.open("a") as f:
            f.write(line[:25])  # the writer is in the middle of a line
        cp = _wait_checkpoint(live, p, lambda c: c.lag.bytes == 25, 60)
        assert (cp.lag.files, cp.synced) == (1, False)  # reported as pending ...
        assert cp.counters.records == records  # ... not read ...
        assert "malformed_line" not in cp.counters.skipped  # ... nor counted as malformed
        with target.open("a") as f:
            f.write(line[25:] + "\n")
        cp = _wait_checkpoint(live, p, lambda c: c.counters.records > records, 60)
        assert cp.counters.records == records + 1
        # the file's last chunk, changed by that line, waits for the file to settle (600 s)
        assert (cp.lag.files, cp.synced) == (1, False)
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
    # stopped while the last chunk was withheld: the state says so, and a restart embeds it
    assert not live.file_states()[target.relative_to(live.src).as_posix()].complete
    assert run(live)["chunks_embedded"] >= 1
    ref, _ = fresh(live.src, tmp_path)
    assert_same_points(live.points(), ref.points())


def test_a_one_shot_run_reads_a_last_line_without_newline(live: Workspace, tmp_path: Path) -> None:
    """One-shot: the file is what it is now. If a writer was in mid-line, the next run reads
    that line again (from the start of the file's last chunk) once it is complete."""
    run(live)
    target = live.src / "-home-u-proj1" / "s11.jsonl"
    line = claude_line(random.Random(4), "s11", 300, words=15)
    with target.open("a") as f:
        f.write(line[:30])
    r = run(live)
    assert r["skipped"] == {"malformed_line": 1}  # read as it is: half a JSON line
    cp = Checkpoint.from_json(live.checkpoint.read_text())
    assert (cp.lag.files, cp.synced, cp.complete) == (0, True, True)
    with target.open("a") as f:
        f.write(line[30:] + "\n")
    r = run(live)
    assert r["changes"] == {"appended": 1}
    ref, _ = fresh(live.src, tmp_path)
    assert_same_points(live.points(), ref.points())


def test_truncated_file_keeps_its_head_and_loses_the_points_beyond(
    live: Workspace, tmp_path: Path
) -> None:
    run(live)
    target = live.src / "-home-u-proj0" / "s01.jsonl"
    lines = target.read_text().splitlines(keepends=True)
    before = len([p for p in live.points().values() if p[1]["source"].endswith("s01.jsonl")])
    target.write_text("".join(lines[: len(lines) // 3]))
    r = run(live)
    assert r["changes"] == {"truncated": 1}
    assert r["chunks_embedded"] <= 1  # only the new last chunk, if it changed
    after = len([p for p in live.points().values() if p[1]["source"].endswith("s01.jsonl")])
    assert r["points_deleted"] == before - after > 0
    ref, _ = fresh(live.src, tmp_path)
    assert_same_points(live.points(), ref.points())


def test_rewritten_file_is_imported_again_without_stale_points(
    live: Workspace, tmp_path: Path
) -> None:
    run(live)
    target = live.src / "-home-u-proj1" / "s12.jsonl"
    target.unlink()
    write_session(target, random.Random(99), "s12-new", 5)
    r = run(live)
    assert r["changes"] == {"rewritten": 1}
    assert r["points_deleted"] > 0
    ref, _ = fresh(live.src, tmp_path)
    assert_same_points(live.points(), ref.points())


def test_deleted_file_keeps_its_points_unless_told(live: Workspace, tmp_path: Path) -> None:
    run(live)
    gone = live.src / "-home-u-proj0" / "s02.jsonl"
    n = len([p for p in live.points().values() if p[1]["source"].endswith("s02.jsonl")])
    gone.unlink()
    r = run(live)
    assert (r["points_deleted"], r["chunks_embedded"]) == (0, 0)
    assert len([p for p in live.points().values() if p[1]["source"].endswith("s02.jsonl")]) == n
    r = run(live, "--on-delete", "delete")
    assert r["points_deleted"] == n
    assert r["changes"] == {"deleted": 1}
    ref, _ = fresh(live.src, tmp_path)
    assert_same_points(live.points(), ref.points())


def test_new_files_during_a_recycling_import_never_start_it_over(
    live: Workspace, tmp_path: Path
) -> None:
    rnd = random.Random(5)
    embedded = 0
    for i in range(30):
        r = run(live, "--recycle-every-files", "2")
        embedded += r["chunks_embedded"]
        if i < 4:  # a new session appears before every roll
            write_session(live.src / "-home-u-proj2" / f"n{i}.jsonl", rnd, f"n{i}", 6)
        elif r["returncode"] == 0:
            break
    assert r["returncode"] == 0
    ref, fresh_report = fresh(live.src, tmp_path)
    assert embedded == fresh_report["chunks_embedded"]  # not one chunk embedded twice
    assert_same_points(live.points(), ref.points())


@pytest.mark.reliability
@pytest.mark.slow
def test_writer_and_kills_between_and_during_runs(live: Workspace, tmp_path: Path) -> None:
    """A writer adds files, appends lines and truncates a file while importer runs recycle
    every few files and get SIGKILLed at random moments: the end state equals a fresh import,
    and all runs together embed at most 1.1 times what the fresh import embeds."""
    rnd = random.Random(20261203)
    src = tmp_path / "big"
    for n in range(8):  # long sessions, as real ones are: appends touch a small part of them
        write_session(src / f"-home-u-p{n % 3}" / f"b{n}.jsonl", rnd, f"b{n}", 100)
    ws = Workspace(tmp_path, src)
    sessions = sorted(src.rglob("*.jsonl"))
    kills = 0
    for i in range(14):
        p = ws.popen(
            *ARGS,
            "--recycle-every-files",
            "3",
            "--checkpoint-interval",
            "0.2",
            "--sort-window",
            "1",
        )
        _mutate(rnd, src, sessions, i)
        if i % 2 == 1:
            _wait_for_work(ws, p)
            time.sleep(rnd.uniform(0.0, 0.4))  # deliberate: a random kill moment
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
        _, err = p.communicate(timeout=300)
        assert p.returncode in (0, 75, -signal.SIGKILL), err
    while run(ws)["returncode"] != 0:  # the writer stopped: catch up
        pass
    ref, fresh_report = fresh(src, tmp_path)
    assert_same_points(ws.points(), ref.points())
    cp = Checkpoint.from_json(ws.checkpoint.read_text())
    # every run's checkpointed chunks, the killed runs' included
    ratio = cp.counters.chunks / fresh_report["chunks_embedded"]
    print(
        f"{kills} kills; chunks embedded {cp.counters.chunks} over all runs, "
        f"{fresh_report['chunks_embedded']} by a fresh import: ratio {ratio:.3f}"
    )
    assert kills >= 3, kills
    assert ratio <= 1.1


def _wait_for_work(ws: Workspace, p: subprocess.Popen[str]) -> None:
    """Until the run has written a checkpoint after loading the model (or ended)."""
    start = ws.checkpoint.stat().st_mtime_ns if ws.checkpoint.exists() else 0

    def ended_or_written() -> bool:
        return p.poll() is not None or (
            ws.checkpoint.exists() and ws.checkpoint.stat().st_mtime_ns > start
        )

    wait_for(ended_or_written, 120, "a checkpoint written after the model loaded", 0.05)


def _mutate(rnd: random.Random, src: Path, sessions: list[Path], i: int) -> None:
    """One round of writer activity: a new session, appends, sometimes a truncation."""
    new = src / "-home-u-proj3" / f"w{i}.jsonl"
    write_session(new, rnd, f"w{i}", rnd.randint(3, 12))
    sessions.append(new)
    for path in rnd.sample(sessions, 2):
        if path.exists():
            write_session(path, rnd, path.stem, rnd.randint(1, 4), start=1000 + i * 10)
    if i % 5 == 4:
        victim = rnd.choice(sessions)
        lines = victim.read_text().splitlines(keepends=True)
        victim.write_text("".join(lines[: max(1, len(lines) // 2)]))


def _wait_checkpoint(
    ws: Workspace, p: subprocess.Popen[str], cond: Any, timeout: float
) -> Checkpoint:
    def met() -> Checkpoint | None:
        assert p.poll() is None, p.communicate()[1]
        try:
            cp = Checkpoint.from_json(ws.checkpoint.read_text())
        except (OSError, ValueError):
            return None  # not written yet, or read while it was being replaced
        return cp if cond(cp) else None

    try:
        return wait_for(met, timeout, "the checkpoint condition", interval=0.1)
    except TimeoutError:
        p.kill()
        raise AssertionError(
            f"condition not met in {timeout}s: {p.communicate()[1][-3000:]}"
        ) from None


@pytest.mark.parametrize("watch", ["inotify", "poll"])
def test_follow_imports_changes_as_they_come(live: Workspace, tmp_path: Path, watch: str) -> None:
    poll = 2.0
    p = live.popen(
        *ARGS,
        "--follow",
        "--watch",
        watch,
        "--poll-interval",
        str(poll),
        "--checkpoint-interval",
        "0.5",
    )
    try:
        cp = _wait_checkpoint(live, p, lambda c: c.synced and c.files_done == 6, 180)
        assert cp.follow
        points = cp.counters.points
        hb = cp.heartbeat.time
        # idle: no work, but the heartbeat keeps coming
        cp = _wait_checkpoint(live, p, lambda c: c.heartbeat.time > hb, 30)
        assert cp.counters.points == points
        # a line appended to an active session and a new session in a new project
        target = live.src / "-home-u-proj0" / "s00.jsonl"
        rnd = random.Random(3)
        t = time.monotonic()
        with target.open("a") as f:
            f.write(claude_line(rnd, "s00", 500, words=30) + "\n")
        write_session(live.src / "-home-u-newproj" / "fresh.jsonl", rnd, "fresh", 4)
        cp = _wait_checkpoint(
            live,
            p,
            lambda c: c.synced and c.files_done == 7 and c.counters.points > points,
            poll + 30,
        )
        took = time.monotonic() - t
        assert cp.last_sync is not None
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    assert p.returncode == 75, err  # follow mode never ends with 0 by itself
    assert "sigterm" in err
    ref, _ = fresh(live.src, tmp_path)
    assert_same_points(live.points(), ref.points())
    print(f"{watch}: change stored {took:.1f}s after it was written (poll interval {poll}s)")


def _timed_lines(p: subprocess.Popen[str]) -> tuple[list[tuple[float, str]], threading.Thread]:
    """The process's stderr lines as they arrive, each with the monotonic time it arrived."""
    lines: list[tuple[float, str]] = []
    assert p.stderr is not None
    pipe = p.stderr

    def read() -> None:
        for line in pipe:
            lines.append((time.monotonic(), line))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return lines, t


def _arrived(lines: list[tuple[float, str]], text: str) -> float | None:
    return next((t for t, line in list(lines) if text in line), None)


def test_a_restarted_follower_is_caught_up_right_after_its_first_scan(tmp_path: Path) -> None:
    """A follower rolled after importing a few thousand small text files, started again over
    the unchanged tree, says it is caught up (log line and checkpoint) within seconds of the end
    of its first scan: nothing is left to read, so nothing may hold the catch-up back."""
    n = 2000
    rnd = random.Random(5)
    src = tmp_path / "src"
    for i in range(n):
        d = src / f"project-{i // 250}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"note-{i}.txt").write_text(sentence(rnd, rnd.randint(4, 12)) + "\n")
    ws = Workspace(tmp_path, src)
    follow = ("--follow", "--settle-seconds", "0", "--batch-size", "64")
    # a Continuous roll right after a pass: the pass was read and committed, so it caught up
    r = ws.run(*follow, "--recycle-every-files", str(n), timeout=600)
    assert r.returncode == 75, r.stderr
    cp = Checkpoint.from_json(ws.checkpoint.read_text())
    assert (cp.last_exit, cp.files_done, cp.counters.points, cp.synced) == ("recycle", n, n, True)
    p = ws.popen(*follow, "--checkpoint-interval", "30")  # no idle heartbeat to lean on
    lines, reader = _timed_lines(p)
    try:
        wait_for(lambda: _arrived(lines, "caught up"), 120, "the caught-up log line")
        scanned = _arrived(lines, f"scan 1 done: {n} files, 0 to read")
        caught_up = _arrived(lines, "caught up")
        assert scanned is not None, "".join(x for _, x in lines)
        assert caught_up is not None
        assert caught_up - scanned < 3.0, f"caught up {caught_up - scanned:.1f}s after the scan"
        cp = _wait_checkpoint(ws, p, lambda c: c.attempt == 1 and c.synced, 10)
        assert (cp.files_done, cp.lag.files, cp.counters.points) == (n, 0, n)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(60)
        reader.join(10)
    assert p.returncode == 75, "".join(x for _, x in lines)


def _search(ws: Workspace, query: str) -> tuple[list[dict[str, Any]], str]:
    """``embedding-importer search --json``: its hits and its log."""
    from conftest import BIN, env_with

    r = subprocess.run(
        [str(BIN), "search", "--collection", "test", "--qdrant-path", str(ws.qdrant), "--json",
         "--log-level", "INFO",
         "--limit", "3", query],
        env=env_with(None), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()], r.stderr


def test_search_reads_through_a_follower_that_holds_the_store(
    live: Workspace, tmp_path: Path
) -> None:
    """While ``run --follow`` holds the embedded store, ``search`` and qdrant-client read it
    through the follower (no wait for the store), and an appended line is found without
    stopping the follower."""
    from qdrant_client import QdrantClient
    from qdrant_client import models as m

    from importer.holder import holder_url

    p = live.popen(*ARGS, "--follow", "--checkpoint-interval", "0.5")
    try:
        cp = _wait_checkpoint(live, p, lambda c: c.synced and c.files_done == 6, 180)
        hits, log = _search(live, "memory leak in the onnx runtime arena")
        assert "searching through its importer" in log, log
        assert "held by another process" not in log, log
        assert len(hits) == 3
        url = holder_url(str(live.qdrant))
        assert url is not None
        client = QdrantClient(url=url, timeout=30)
        assert client.count("test").count == cp.counters.points
        proj0 = m.Filter(
            must=[m.FieldCondition(key="project", match=m.MatchValue(value="-home-u-proj0"))]
        )
        found = client.query_points("test", query=[0.1] * 384, query_filter=proj0, limit=50)
        assert found.points
        assert all(h.payload and h.payload["project"] == "-home-u-proj0" for h in found.points)
        # a new turn in an active session: searchable as soon as the follower has it
        target = live.src / "-home-u-proj1" / "s12.jsonl"
        turn = json.loads(claude_line(random.Random(1), "s12", 900))
        turn["message"]["content"] = "zebra giraffe savanna migration seen at the waterhole"
        with target.open("a") as f:
            f.write(json.dumps(turn) + "\n")
        _wait_checkpoint(live, p, lambda c: c.synced and c.counters.points > cp.counters.points,
                         60)  # fmt: skip
        hits, _ = _search(live, "zebra giraffe savanna migration near the waterhole")
        assert "zebra giraffe savanna" in hits[0]["payload"]["text"], hits[0]
        client.close()
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    assert p.returncode == 75, err
    assert not (live.qdrant / ".eio-reads.json").exists()  # released with the store
    direct, log = _search(live, "zebra giraffe savanna migration near the waterhole")
    assert "through its importer" not in log
    assert direct[0]["id"] == hits[0]["id"]


def test_a_growing_session_costs_what_it_adds(tmp_path: Path) -> None:
    """A session written record by record while followed: its sealed chunks are embedded once
    each, its last chunk once the file has been quiet for the settle time (not after every
    append). The follower ends with the points of a fresh import of the final file, having
    embedded at most 1.1 times what that import embeds."""
    settle = 4.0
    src = tmp_path / "projects"
    target = src / "-home-u-grow" / "grow.jsonl"
    rnd = random.Random(11)
    write_session(target, rnd, "grow", 1)
    ws = Workspace(tmp_path, src)
    p = ws.popen("--follow", "--settle-seconds", str(settle), "--batch-size", "8",
                 "--checkpoint-interval", "0.3")  # fmt: skip
    try:
        _wait_checkpoint(ws, p, lambda c: c.follow and c.last_sync is not None, 180)
        for i in range(1, 40):  # a record every 0.15 s, well inside the settle time
            with target.open("a") as f:
                f.write(claude_line(rnd, "grow", i, words=rnd.randint(10, 40)) + "\n")
            time.sleep(0.15)  # the writer's pace, not a wait for the importer
        written = target.stat().st_mtime_ns / 1e9
        # the last chunk waits: reported as pending until the file has settled ...
        cp = _wait_checkpoint(ws, p, lambda c: c.counters.records == 40, 60)
        if time.time() < written + settle:  # seen (as nearly always) before it settled
            assert (cp.synced, cp.lag.files) == (False, 1)
        cp = _wait_checkpoint(ws, p, lambda c: c.synced and c.lag.files == 0, 60)
        # ... and is embedded once the file has been quiet for the settle time
        assert cp.last_sync is not None
        assert cp.last_sync.timestamp() >= written + settle - 0.05
        embedded = cp.counters.chunks
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    assert p.returncode == 75, err
    ref, report = fresh(src, tmp_path)
    assert_same_points(ws.points(), ref.points())
    assert report["chunks_embedded"] >= 15
    assert embedded <= 1.1 * report["chunks_embedded"], (embedded, report["chunks_embedded"])
