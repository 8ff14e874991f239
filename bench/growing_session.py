"""A Claude Code session written while it is followed: what its growing last chunk costs.

One session file gets a record every ``--interval`` seconds for ``--seconds`` while
``embedding-importer run --follow --settle-seconds S`` watches it, once per settle time in
``--settle`` (0 is the behaviour before settling: the last chunk embedded after every change).
Reports, per settle time:

- chunks embedded by the follower (its checkpoint's ``counters.chunks``) against a fresh
  one-shot import of the final file (its run report), and their ratio;
- freshness, from the follower's read API (a scroll of the collection every 0.2 s): per
  record, the time from its write to the first stored chunk that covers it (chunk payloads
  carry the first and last timestamp of their records; every record has its own), for the
  records sealed while the writer was still writing; and the trailing-text latency, from the
  last write to the final file's last chunk being stored.

    python bench/growing_session.py           # a record every 0.5 s for 180 s; settle 0 and 5
    python bench/growing_session.py --quick   # a record every 0.2 s for 3 s; settle 0 and 1
Writes bench/out/growing_session.json and docs/img/growing_session.png.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c

from devcluster.testing import wait_for
from eio_common.contract import Checkpoint

COLLECTION = "bench"
T0 = datetime(2026, 12, 1, tzinfo=UTC)
WORDS = [
    "arena", "onnx", "runtime", "grows", "while", "the", "importer", "embeds", "a", "session",
    "of", "records", "and", "qdrant", "stores", "every", "chunk", "with", "its", "payload",
    "so", "that", "search", "finds", "text", "it", "needs", "soon",
]  # fmt: skip


def stamp(i: int) -> str:
    """Record ``i``'s timestamp: one second apart, so a chunk's time range names its records."""
    return (T0 + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")


def record(rng: random.Random, i: int) -> str:
    kind = "user" if i % 2 == 0 else "assistant"
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60)))
    return json.dumps(
        {
            "type": kind,
            "sessionId": "bench-session",
            "uuid": f"r{i}",
            "timestamp": stamp(i),
            "message": {"role": kind, "content": f"{i}: {text}"},
        }
    )


def _index(ts: str) -> int:
    return int((datetime.fromisoformat(ts.replace("Z", "+00:00")) - T0).total_seconds())


class Watcher:
    """Scrolls the follower's store through its read API every 0.2 s; remembers when each
    record was first covered by a stored chunk, and when each (chunk index, text) appeared."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.covered: dict[int, float] = {}
        self.seen: dict[tuple[int, str], float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from qdrant_client import QdrantClient

        from importer.holder import holder_url

        client = None
        while not self.stop.wait(0.2):
            if client is None:
                url = holder_url(str(self.store))
                client = QdrantClient(url=url, timeout=10) if url else None
                continue
            try:
                points, _ = client.scroll(COLLECTION, limit=10_000, with_payload=True)
            except Exception:
                continue  # not created yet, or the follower is busy: the next look
            now = time.monotonic()
            for p in points:
                pl = p.payload or {}
                self.seen.setdefault((int(pl["chunk_index"]), str(pl["text"])), now)
                if "time_from" in pl:
                    for r in range(_index(pl["time_from"]), _index(pl["time_to"]) + 1):
                        self.covered.setdefault(r, now)
        if client is not None:
            client.close()


def _checkpoint(path: Path, p: subprocess.Popen[bytes], cond: Any, timeout: float) -> Checkpoint:
    def met() -> Checkpoint | None:
        if p.poll() is not None:
            raise RuntimeError(f"the importer exited {p.returncode}")
        try:
            cp = Checkpoint.from_json(path.read_text())
        except (OSError, ValueError):
            return None
        return cp if cond(cp) else None

    return wait_for(met, timeout, "the checkpoint condition", interval=0.1)


def write_session(target: Path, n: int, interval: float) -> list[float]:
    """Append ``n`` records, one every ``interval`` seconds; their write times."""
    rng = random.Random(17)
    written = []
    start = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, start + i * interval - time.monotonic()))  # the writer's pace
        with target.open("a") as f:
            f.write(record(rng, i) + "\n")
        written.append(time.monotonic())
    return written


def follow(work: Path, src: Path, settle: float, n: int, interval: float) -> dict[str, Any]:
    """Follow the session while it is written; the follower's counts and the watcher's times."""
    target = src / "-home-u-bench" / "session.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("")
    store, ckpt = work / f"q-{settle:g}", work / f"cp-{settle:g}.json"
    cmd = c.importer_run_cmd(
        src, store, ckpt, "--follow", "--settle-seconds", str(settle),
        "--checkpoint-interval", "0.5", "--threads", "1",
    )  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watcher = Watcher(store)
    try:
        _checkpoint(ckpt, p, lambda x: x.follow and x.synced, 600)
        watcher.thread.start()
        written = write_session(target, n, interval)
        done = _checkpoint(ckpt, p, lambda x: x.synced and x.counters.records >= n, 600)
        wait_for(lambda: watcher.seen and max(watcher.seen.values()) < time.monotonic() - 1,
                 60, "the watcher's next scroll")  # fmt: skip
    finally:
        watcher.stop.set()
        p.send_signal(signal.SIGTERM)
        p.wait(120)
        watcher.thread.join(30)
    final = Checkpoint.from_json(ckpt.read_text())
    return {
        "written": written,
        "follower_chunks": final.counters.chunks,
        "synced_records": done.counters.records,
        "covered": watcher.covered,
        "seen": watcher.seen,
        "exit_code": p.returncode,
    }


def fresh_import(work: Path, src: Path) -> dict[str, Any]:
    """A one-shot import of the final file: its chunks embedded, and its last chunk."""
    from importer.sink import open_sink

    store, report = work / "q-fresh", work / "fresh-report.json"
    cmd = c.importer_run_cmd(src, store, work / "cp-fresh.json", "--report", str(report))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sink = open_sink(None, None, str(store), COLLECTION, False, 0)
    try:
        payloads = [p.payload for p in sink.scroll(False)]
    finally:
        sink.close()
    last = max(payloads, key=lambda pl: int(pl["chunk_index"]))
    return {
        "chunks_embedded": json.loads(report.read_text())["chunks_embedded"],
        "last_index": int(last["chunk_index"]),
        "last_text": str(last["text"]),
        "last_from": _index(last["time_from"]),
    }


def summarize(settle: float, run: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    written, covered = run["written"], run["covered"]
    sealed = [covered[i] - written[i] for i in range(ref["last_from"]) if i in covered]
    trailing = run["seen"].get((ref["last_index"], ref["last_text"]))
    return {
        "settle_seconds": settle,
        "follower_chunks_embedded": run["follower_chunks"],
        "fresh_chunks_embedded": ref["chunks_embedded"],
        "ratio": round(run["follower_chunks"] / ref["chunks_embedded"], 3),
        "sealed_records": len(sealed),
        "sealed_uncovered": ref["last_from"] - len(sealed),
        "sealed_latency_p50": round(c.pct(sealed, 50), 2) if sealed else None,
        "sealed_latency_p90": round(c.pct(sealed, 90), 2) if sealed else None,
        "sealed_latency_max": round(max(sealed), 2) if sealed else None,
        "trailing_latency": None if trailing is None else round(trailing - written[-1], 2),
        "exit_code": run["exit_code"],
        "latencies": [round(x, 3) for x in sealed],
    }


def plot(results: list[dict[str, Any]]) -> None:
    plt = c.plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    names = [f"settle {r['settle_seconds']:g} s" for r in results]
    a.bar([*names, "fresh import"],
          [*(r["follower_chunks_embedded"] for r in results), results[0]["fresh_chunks_embedded"]],
          color=[*["tab:red", "tab:blue", "tab:green"][: len(results)], "tab:gray"])  # fmt: skip
    a.set_ylabel("chunks embedded")
    a.set_title("cost of following a growing session")
    for name, r in zip(names, results, strict=True):
        xs = sorted(r["latencies"])
        b.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=name)
    b.set_xlabel("seconds from a record's write to a stored chunk covering it")
    b.set_ylabel("fraction of records")
    b.set_title("freshness (records in sealed chunks)")
    b.legend()
    c.save_figure(fig, "growing_session")


def main() -> int:
    ap = c.arg_parser(__doc__, "a record every 0.2 s for 3 s; settle 0 and 1")
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--settle", default="0,5", help="settle times to compare, comma-separated")
    a = ap.parse_args()
    if a.quick:
        a.interval, a.seconds, a.settle = 0.2, 3.0, "0,1"
    n = max(2, int(a.seconds / a.interval))
    work = Path(tempfile.mkdtemp(prefix="eio-grow-", dir="/var/tmp"))
    try:
        results, ref = [], None
        for settle in (float(x) for x in a.settle.split(",")):
            src = work / f"src-{settle:g}" / "projects"
            run = follow(work, src, settle, n, a.interval)
            ref = ref or fresh_import(work, src)
            results.append(summarize(settle, run, ref))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "latencies"}))
        c.write_result("growing_session", {"records": n, "interval": a.interval,
                                           "results": results, "machine": c.machine_note()},
                       a.quick)  # fmt: skip
        plot(results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["exit_code"] == 75 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
