#!/usr/bin/env python
"""Rerun every benchmark, one after the other, and regenerate the plots in docs/img/.

    python bench/run_all.py            # full runs (about 1.5-2 hours on 2 shared cores)
    python bench/run_all.py --quick    # smoke runs of every script (a few minutes each)
    python bench/run_all.py --only memory,checkpoint_size

The cluster benchmarks (roll_latency, operator_scale) need ``devcluster up``; without a
cluster they print "not run" and the others still run. bench/importer_throughput.py (owned
by the importer) runs too when present. Each script writes bench/out/<name>.json.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import common as c

HERE = Path(__file__).resolve().parent

# (name, full-run arguments, quick-run arguments). memory.py caps every configuration at
# 300 s: on 2 shared cores the batch-256 configurations embed ~5-11 chunks/s, so 30,000 chunks
# each would take hours. importer_throughput.py belongs to the importer and has no --quick.
# store.py fills Qdrant Edge to 1M points and local mode to 100k (~15 min); --quick: 2,000.
QUICK = ["--quick"]
BENCHES: list[tuple[str, list[str], list[str]]] = [
    ("checkpoint_size", [], QUICK),
    ("store", [], QUICK),
    ("memory", ["--chunks", "30000", "--max-seconds", "300"], QUICK),
    ("throughput", [], QUICK),
    ("restart_cost", [], QUICK),
    ("importer_throughput", [], ["--reps", "1", "--scale", "0.2"]),
    ("roll_latency", [], QUICK),
    ("operator_scale", [], QUICK),
]


def main() -> int:
    ap = c.arg_parser(__doc__)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    failed = []
    for name, args, quick_args in BENCHES:
        if only and name not in only:
            continue
        script = HERE / f"{name}.py"
        if not script.exists():
            print(f"== {name}: {script} not present, skipped", flush=True)
            continue
        cmd = [sys.executable, str(script), *(quick_args if a.quick else args)]
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        t = time.monotonic()
        rc = subprocess.run(cmd, check=False).returncode
        print(f"== {name}: exit {rc} after {time.monotonic() - t:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"not run or failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
