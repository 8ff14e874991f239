"""Rolls of an importer whose embedded store already holds many points (issue: embedded storage).

Pre-fills the store with N random points (384-dim, ~300-byte payloads, written straight through
the importer's own EdgeSink), then imports a small corpus with ``--recycle-every-files`` so the
importer rolls every few files, as a pod does at its memory threshold. Per run it records, from
the run report: the time to open the store and load the file states, the process's anonymous
memory right after that (before any work) and its peak. Anonymous memory must stay flat across
rolls and the store must reopen quickly however many points it holds.

    python bench/store_rolls.py                 # 100,000 points, 24 files, a roll every 3
    python bench/store_rolls.py --quick  # 2,000 points, 4 files, a roll every 2
Writes bench/out/store_rolls.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c
import corpus

COLLECTION = "bench"


def prefill(store: Path, n: int) -> float:
    import numpy as np

    from importer.sink import EdgeSink

    rng = np.random.default_rng(7)
    sink = EdgeSink(str(store), COLLECTION, True, 384)
    t = time.monotonic()
    for start in range(0, n, 1000):
        k = min(1000, n - start)
        vecs = rng.standard_normal((k, 384), dtype=np.float32)
        ids = [str(uuid.UUID(int=start + i + 1)) for i in range(k)]
        pays = [{"text": "x" * 280, "source": f"prefill/{start + i}"} for i in range(k)]
        sink.upsert(ids, vecs.tolist(), pays)
    sink.sync()
    sink.close()
    return time.monotonic() - t


def main() -> None:
    ap = c.arg_parser(__doc__, "2,000 points, 4 files, a roll every 2")
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--every", type=int, default=3)
    args = ap.parse_args()
    if args.quick:
        args.points, args.files, args.every = 2_000, 4, 2
    work = Path(tempfile.mkdtemp(prefix="eio-store-rolls-", dir="/var/tmp"))
    try:
        src = work / "src"
        corpus.generate(src, files=args.files, seed=5, median_turns=8)
        fill_s = prefill(work / "q", args.points)
        runs: list[dict[str, Any]] = []
        for i in range(100):
            report = work / f"r{i}.json"
            cmd = c.importer_run_cmd(
                src,
                work / "q",
                work / "cp.json",
                "--threads",
                "1",
                "--recycle-every-files",
                str(args.every),
                "--report",
                str(report),
                collection=COLLECTION,
            )
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
            rep = json.loads(report.read_text())
            runs.append(
                {
                    k: rep[k]
                    for k in (
                        "store_open_seconds",
                        "start_memory_bytes",
                        "peak_memory_bytes",
                        "chunks_embedded",
                        "files_done",
                        "exit_reason",
                    )
                }
            )
            if r.returncode == 0:
                break
            assert r.returncode == 75, r.stderr[-2000:]
        starts = [r["start_memory_bytes"] for r in runs[1:]] or [runs[0]["start_memory_bytes"]]
        drift = (max(starts) - min(starts)) / min(starts)
        out = {
            "points": args.points,
            "files": args.files,
            "every": args.every,
            "prefill_seconds": fill_s,
            "runs": runs,
            "open_seconds_max": max(r["store_open_seconds"] for r in runs),
            "start_anon_mib": [round(c.mib(s), 1) for s in (r["start_memory_bytes"] for r in runs)],
            "start_anon_drift_after_first_roll": drift,
        }
        print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
        c.write_result("store_rolls", out, args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
