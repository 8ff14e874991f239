"""Follow mode: how soon an appended line is stored, and what an idle watcher costs.

Starts ``embedding-importer run --follow`` over a generated conversation corpus, waits until it
has caught up, then (1) appends one line to a session file several times and measures the time
from the write to the checkpoint saying the new point is stored and the import is synced
again, and (2) leaves it idle and samples its anonymous memory (RssAnon) and CPU time
(utime + stime from /proc) every few seconds. Once per watch mode (inotify, polling).

    python bench/follow_idle.py                       # 100 files, 5 appends, 60 s idle
    python bench/follow_idle.py --quick  # 4 files, 2 appends, 4 s idle, poll every 1 s
Writes bench/out/follow_idle.json.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c
import corpus

from devcluster.testing import wait_for
from eio_common.contract import Checkpoint


def _cp(path: Path) -> Checkpoint | None:
    try:
        return Checkpoint.from_json(path.read_text())
    except (OSError, ValueError):
        return None


def _wait(path: Path, cond: Any, timeout: float, proc: subprocess.Popen[bytes]) -> Checkpoint:
    def met() -> Checkpoint | None:
        if proc.poll() is not None:
            raise RuntimeError(f"the importer exited {proc.returncode}")
        cp = _cp(path)
        return cp if cp is not None and cond(cp) else None

    return wait_for(met, timeout, "the checkpoint condition", interval=0.05)


def _proc(pid: int) -> tuple[int, float]:
    """(RssAnon bytes, CPU seconds) of a process."""
    anon = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            anon = int(line.split()[1]) * 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return anon, (int(fields[11]) + int(fields[12])) / ticks


def one(
    work: Path, src: Path, watch: str, appends: int, idle: float, poll: float
) -> dict[str, Any]:
    ckpt = work / f"cp-{watch}.json"
    cmd = c.importer_run_cmd(
        src,
        work / f"q-{watch}",
        ckpt,
        "--threads",
        "1",
        "--follow",
        "--watch",
        watch,
        "--poll-interval",
        str(poll),
        "--checkpoint-interval",
        "0.5",
        "--settle-seconds",
        "0",
    )
    p = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        cp = _wait(ckpt, lambda x: x.synced and x.files_done == x.files_total > 0, 1800, p)
        catch_up = time.monotonic() - t0
        target = next(src.rglob("*.jsonl"))
        latencies = []
        for i in range(appends):
            before = cp.counters.points
            line = {
                "type": "user",
                "sessionId": "bench",
                "uuid": f"b{i}",
                "message": {"role": "user", "content": f"appended line {i} about arenas"},
            }
            t = time.monotonic()
            with target.open("a") as f:
                f.write(json.dumps(line) + "\n")
            cp = _wait(ckpt, lambda x, b=before: x.synced and x.counters.points > b, 120, p)
            latencies.append(time.monotonic() - t)
        samples = []
        t_idle = time.monotonic()
        while time.monotonic() - t_idle < idle:
            anon, cpu = _proc(p.pid)
            samples.append({"t": round(time.monotonic() - t_idle, 1), "anon": anon, "cpu": cpu})
            time.sleep(max(1.0, idle / 12))  # deliberate: the idle time being measured
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(60)
    cpu_idle = samples[-1]["cpu"] - samples[0]["cpu"]
    span = samples[-1]["t"] - samples[0]["t"]
    anons = [s["anon"] for s in samples]
    return {
        "watch": watch,
        "catch_up_seconds": catch_up,
        "append_to_stored_seconds": latencies,
        "append_to_stored_median": c.median(latencies),
        "idle_seconds": span,
        "idle_cpu_seconds": cpu_idle,
        "idle_cpu_percent": 100 * cpu_idle / span if span else 0.0,
        "idle_anon_mib_first_last": [round(c.mib(anons[0]), 1), round(c.mib(anons[-1]), 1)],
        "idle_anon_drift": (max(anons) - min(anons)) / min(anons),
        "samples": samples,
        "exit_code": p.returncode,
    }


def main() -> int:
    ap = c.arg_parser(__doc__, "4 files, 2 appends, 4 s idle, poll every 1 s")
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--appends", type=int, default=5)
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--poll-interval", type=float, default=5.0)
    args = ap.parse_args()
    if args.quick:
        args.files, args.appends, args.idle, args.poll_interval = 4, 2, 4.0, 1.0
    work = Path(tempfile.mkdtemp(prefix="eio-follow-", dir="/var/tmp"))
    try:
        src = work / "src"
        corpus.generate(src, files=args.files, seed=9, median_turns=8)
        results = [
            one(work, src, w, args.appends, args.idle, args.poll_interval)
            for w in ("inotify", "poll")
        ]
        out = {
            "files": args.files,
            "poll_interval": args.poll_interval,
            "results": results,
        }
        for r in results:
            print(json.dumps({k: v for k, v in r.items() if k != "samples"}))
        c.write_result("follow_idle", out, args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # SIGTERM makes a follower checkpoint and exit 75 (docs/importer.md); anything else failed
    return 0 if all(r["exit_code"] == 75 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
