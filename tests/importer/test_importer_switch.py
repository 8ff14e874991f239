"""``run --rebuild --switch-on-order`` with two shards (real model, real Qdrant Edge, real
processes, each shard its own store, their read APIs peering each other): the test plays the
operator through the orders files beside the file checkpoints. A shard that is ready waits for
the switch order; once switched it keeps the old version open until the retire order; a read
fanned out over both shards is pinned to one build, so every answer is all-old or all-new, even
while one shard has switched and the other has not; after the retire order the old versions
are gone and the points equal a fresh import with the new settings."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from conftest import Workspace, assert_same_points, make_corpus

from devcluster.testing import wait_for
from eio_common.contract import EXIT_TEMPFAIL, BuildState, Checkpoint, active_pointer_file

REBUILD = ("--chunk-size", "60", "--rebuild", "--switch-on-order", "--checkpoint-interval", "0.5")
Pairs = frozenset[tuple[str, str]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _shards(root: Path) -> tuple[Workspace, Workspace, Workspace]:
    """Two shards imported with chunk size 120, and one fresh import with 60 of the same."""
    src = make_corpus(
        root / "src", conversations=2, turns=6, jsonl_files=2, records=4, markdown=3, broken=False
    )
    shards = [Workspace(root / f"s{i}", src) for i in (0, 1)]
    for i, ws in enumerate(shards):
        r = ws.run("--shard", f"{i}/2", "--chunk-size", "120")
        assert r.returncode == 0, r.stderr
    fresh = Workspace(root / "fresh", src)
    assert fresh.run("--chunk-size", "60").returncode == 0
    return shards[0], shards[1], fresh


def _build(ws: Workspace) -> BuildState:
    build = Checkpoint.from_json(ws.checkpoint.read_text()).build
    assert build is not None
    return build


def _order(ws: Workspace, **orders: str) -> None:
    tmp = ws.root / "orders.tmp"
    tmp.write_text(json.dumps(orders))
    tmp.replace(Path(f"{ws.checkpoint}.orders.json"))


def _active(ws: Workspace) -> str | None:
    f = ws.qdrant / active_pointer_file("test")
    return str(json.loads(f.read_text())["active"]) if f.exists() else None


def _pairs(ws: Workspace) -> Pairs:
    return frozenset((pid, str(v[1]["text"])) for pid, v in ws.points().items())


def _scroll(url: str) -> Pairs | None:
    """Every point (id, text) through ``url``'s fan-out; None for a 503 (a client retries)."""
    req = urllib.request.Request(
        f"{url}/collections/test/points/scroll",
        data=json.dumps({"limit": 100000, "with_payload": True}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            points = json.loads(resp.read())["result"]["points"]
    except urllib.error.HTTPError as e:
        if e.code != 503:
            raise
        return None
    return frozenset((str(p["id"]), str(p["payload"]["text"])) for p in points)


@dataclass
class Reader:
    """Reads every point through both shards' read APIs, round and round, and sorts each
    answer: the whole old import, the whole new one, a retry (503), or anything else."""

    urls: list[str]
    old: Pairs
    new: Pairs
    seen: dict[str, int] = field(default_factory=lambda: {"old": 0, "new": 0, "503": 0})
    bad: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            self._read()
        except Exception as e:  # the test's waits on the counts fail and show this
            self.bad.append(f"reader failed: {type(e).__name__}: {e}")

    def _read(self) -> None:
        while not self.done.is_set():
            for url in self.urls:
                got = _scroll(url)
                kind = "503" if got is None else {self.old: "old", self.new: "new"}.get(got)
                if kind is None:
                    assert got is not None
                    self.bad.append(
                        f"{url}: {len(got & self.old)} old, {len(got & self.new)} new, "
                        f"{len(got - self.old - self.new)} neither of {len(got)}"
                    )
                else:
                    self.seen[kind] += 1


def _start(ws: Workspace, shard: int, port: int, peer: int, *extra: str) -> subprocess.Popen[str]:
    return ws.popen(
        "--shard", f"{shard}/2", *REBUILD, "--read-address", f"127.0.0.1:{port}",
        "--read-peers", f"http://127.0.0.1:{peer}", *extra,
    )  # fmt: skip


def _ready(ws: Workspace, p: subprocess.Popen[str]) -> bool:
    assert p.poll() is None, p.communicate()[1][-4000:]
    try:
        return _build(ws).ready_at is not None
    except (OSError, ValueError, AssertionError):
        return False


def _waited_past_ready(ws: Workspace, seconds: float) -> bool:
    """The shard heartbeated ``seconds`` after it reported ready (it looked at the orders)."""
    cp = Checkpoint.from_json(ws.checkpoint.read_text())
    assert cp.build is not None
    assert cp.build.ready_at is not None
    assert cp.heartbeat is not None
    return cp.heartbeat.time > cp.build.ready_at + timedelta(seconds=seconds)


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        print(p.communicate(timeout=120)[1][-3000:])


def test_two_following_shards_switch_on_order_and_reads_never_mix(tmp_path: Path) -> None:
    ws0, ws1, fresh = _shards(tmp_path)
    old, new = _pairs(ws0) | _pairs(ws1), _pairs(fresh)
    assert old != new
    assert _pairs(ws0)
    assert _pairs(ws1)
    ports = [_free_port(), _free_port()]
    procs = [_start(ws0, 0, ports[0], ports[1], "--follow"),
             _start(ws1, 1, ports[1], ports[0], "--follow")]  # fmt: skip
    reader = Reader([f"http://127.0.0.1:{p}" for p in ports], old, new)
    thread = threading.Thread(target=reader.run, daemon=True)
    try:
        wait_for(lambda: _ready(ws0, procs[0]) and _ready(ws1, procs[1]), 300, "both ready", 0.2)
        thread.start()
        d0, d1 = _build(ws0).digest, _build(ws1).digest
        assert d0 is not None
        assert d0 == d1
        assert (_build(ws0).target, _build(ws1).target) == ("test--v1", "test--v1")
        wait_for(lambda: _waited_past_ready(ws0, 3) and _waited_past_ready(ws1, 3), 60,
                 "both shards heartbeat 3 s after ready", 0.2)  # fmt: skip
        assert (_active(ws0), _active(ws1)) == (None, None)  # ready, but no order: no switch
        assert not reader.bad, reader
        assert reader.seen["old"] > 0, reader

        _order(ws0, switch=d0)  # one shard switches, the other not yet: the mixed window
        wait_for(lambda: _build(ws0).active == "test--v1", 60, "shard 0 switched", 0.2)
        assert _build(ws0).retiring == ["test"]
        assert (ws0.qdrant / "test").is_dir()
        n = sum(reader.seen.values())
        wait_for(lambda: reader.bad or sum(reader.seen.values()) > n + 4, 60, "reads", 0.1)
        assert not reader.bad, reader
        assert _active(ws1) is None

        _order(ws1, switch=d0)
        wait_for(lambda: _build(ws1).active == "test--v1", 60, "shard 1 switched", 0.2)
        for ws in (ws0, ws1):
            _order(ws, switch=d0, retire=d0)
        wait_for(lambda: not _build(ws0).retiring and not _build(ws1).retiring, 60, "retired", 0.2)
        n = reader.seen["new"]
        wait_for(lambda: reader.seen["new"] > n + 2, 60, "reads after the retire", 0.1)
    finally:
        reader.done.set()
        _stop(procs)
    thread.join(60)
    assert not reader.bad, reader
    assert reader.seen["old"] > 0, reader
    assert reader.seen["new"] > 0, reader
    for ws in (ws0, ws1):
        assert _active(ws) == "test--v1"
        assert not (ws.qdrant / "test").exists()
        assert not (ws.qdrant / "test-files").exists()
    assert_same_points({**ws0.points(), **ws1.points()}, fresh.points())


def test_one_shot_shards_exit_0_only_after_the_retire_order(tmp_path: Path) -> None:
    ws0, ws1, fresh = _shards(tmp_path)
    ports = [_free_port(), _free_port()]
    procs = [_start(ws0, 0, ports[0], ports[1]), _start(ws1, 1, ports[1], ports[0])]
    try:
        wait_for(lambda: _ready(ws0, procs[0]) and _ready(ws1, procs[1]), 300, "both ready", 0.2)
        digest = _build(ws0).digest
        assert digest is not None
        assert digest == _build(ws1).digest
        for ws in (ws0, ws1):
            _order(ws, switch="0123456789abcdef")  # another build's order is not ours
        wait_for(lambda: _waited_past_ready(ws0, 3) and _waited_past_ready(ws1, 3), 60,
                 "both shards heartbeat 3 s after ready", 0.2)  # fmt: skip
        assert (_active(ws0), _active(ws1)) == (None, None)
        for ws in (ws0, ws1):
            _order(ws, switch=digest)
        switched = lambda: _build(ws0).active == _build(ws1).active == "test--v1"  # noqa: E731
        wait_for(switched, 60, "both switched", 0.2)
        for ws, p in zip((ws0, ws1), procs, strict=True):
            assert p.poll() is None  # waits for the retire order
            assert not Checkpoint.from_json(ws.checkpoint.read_text()).complete
            _order(ws, switch=digest, retire=digest)
        codes = [p.wait(120) for p in procs]
    finally:
        _stop(procs)
    assert codes == [0, 0]
    for ws in (ws0, ws1):
        cp = Checkpoint.from_json(ws.checkpoint.read_text())
        assert cp.complete
        assert cp.build is not None
        assert cp.build.retiring == []
        assert not (ws.qdrant / "test").exists()
    assert_same_points({**ws0.points(), **ws1.points()}, fresh.points())


def test_a_restarted_shard_switches_and_retires_on_orders_given_while_it_was_down(
    tmp_path: Path,
) -> None:
    src = make_corpus(tmp_path / "src", conversations=1, turns=4, jsonl_files=1, records=3,
                      markdown=1, broken=False)  # fmt: skip
    ws, fresh = Workspace(tmp_path / "s", src), Workspace(tmp_path / "fresh", src)
    assert ws.run("--chunk-size", "120").returncode == 0
    assert fresh.run("--chunk-size", "60").returncode == 0
    p = ws.popen(*REBUILD)
    try:
        wait_for(lambda: _ready(ws, p), 300, "ready", 0.2)
    finally:
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=120)[1]
    assert p.returncode == EXIT_TEMPFAIL, err[-3000:]  # a stop while waiting is any stop
    digest = _build(ws).digest
    assert digest is not None
    _order(ws, switch=digest)  # given while the shard was down

    p = ws.popen(*REBUILD)
    try:
        wait_for(lambda: _build(ws).active == "test--v1", 300, "the switch on restart", 0.2)
        assert p.poll() is None  # waits for the retire order
        assert (ws.qdrant / "test").is_dir()
    finally:
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=120)[1]
    assert p.returncode == EXIT_TEMPFAIL, err[-3000:]
    assert "rebuild of test: resuming version test--v1" in err, err[-3000:]
    assert _build(ws).retiring == ["test"]

    _order(ws, switch=digest, retire=digest)
    r = ws.run(*REBUILD)  # the switch is done: it imports into test--v1 and retires the rest
    assert r.returncode == 0, r.stderr[-3000:]
    assert "retired the versions of test before test--v1: deleted test" in r.stderr, r.stderr
    assert not (ws.qdrant / "test").exists()
    assert_same_points(ws.points(), fresh.points())
