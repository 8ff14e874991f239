#!/usr/bin/env python
"""Rerun every benchmark, one after the other, and regenerate the plots in docs/img/.

    python bench/run_all.py            # full runs (about 1.5-2 hours on 2 shared cores)
    python bench/run_all.py --quick    # every script on tiny inputs (CI: hack/test.sh)
    python bench/run_all.py --only memory,checkpoint_size

Every script in bench/ runs, or is a helper one of them imports (common, kube, corpus).
Full runs write bench/out/<name>.json and docs/img/; --quick runs write to --out
(default bench/out/quick/, plots in its img/), so they never overwrite a full run's results.

The cluster benchmarks need a reachable cluster ($KUBECONFIG set and /readyz ok, e.g.
``devcluster up``); without one they are "not run (no cluster)" and the others still run,
except under CI=true, where a missing cluster is a failure. Ends with one line per bench
(name, ok / FAIL / not run, seconds) and exits non-zero when any bench failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import common as c

HERE = Path(__file__).resolve().parent
QUICK = ["--quick"]


@dataclass(frozen=True)
class Bench:
    name: str
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = tuple(QUICK)
    cluster: bool = False  # needs a reachable cluster


# memory.py caps every configuration at 300 s: on 2 shared cores the batch-256 configurations
# embed ~5-11 chunks/s, so 30,000 chunks each would take hours. store.py fills Qdrant Edge to
# 1M points and local mode to 100k (~15 min). plot_live.py and summarize.py read what the
# scripts before them wrote, so they run after them.
BENCHES: list[Bench] = [
    Bench("checkpoint_size"),
    Bench("store"),
    Bench("memory", ("--chunks", "30000", "--max-seconds", "300")),
    Bench("throughput"),
    Bench("restart_cost"),
    Bench("importer_throughput"),
    Bench("store_rolls"),
    Bench("follow_idle"),
    Bench("growing_session"),
    Bench("plot_live"),
    Bench("read_api"),
    Bench("roll_latency", cluster=True),
    Bench("operator_scale", cluster=True),
    Bench("operator_soak", cluster=True),
    Bench("summarize"),
]


def cluster_ready() -> bool:
    """$KUBECONFIG names a cluster whose API server answers /readyz with ok."""
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not kubeconfig or not Path(kubeconfig).exists():
        return False
    try:
        from eio_common.kubeapi import api_client

        api = api_client(kubeconfig)
        request = api.param_serialize("GET", "/readyz", auth_settings=["BearerToken"])
        resp = api.call_api(*request, _request_timeout=10)
        resp.read()
        return bool(resp.status == 200 and resp.data.strip() == b"ok")
    except Exception as e:  # any failure to reach it means: no cluster
        print(f"cluster not reachable: {e}", file=sys.stderr)
        return False


def run_one(b: Bench, quick: bool, env: dict[str, str]) -> tuple[str, float]:
    """Run one script; ``("ok" | "FAIL (exit N)", seconds)``."""
    cmd = [sys.executable, str(HERE / f"{b.name}.py"), *(b.quick if quick else b.full)]
    print(f"== {b.name}: {' '.join(cmd)}", flush=True)
    t = time.monotonic()
    rc = subprocess.run(cmd, check=False, env=env).returncode
    took = time.monotonic() - t
    print(f"== {b.name}: exit {rc} after {took:.0f} s", flush=True)
    return ("ok" if rc == 0 else f"FAIL (exit {rc})"), took


def main() -> int:
    ap = c.arg_parser(__doc__, "every script on tiny inputs, in seconds")
    ap.add_argument("--only", default="", help="comma-separated bench names")
    ap.add_argument("--out", type=Path, help="results directory (--quick: bench/out/quick)")
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    unknown = only - {b.name for b in BENCHES}
    if unknown:
        ap.error(f"unknown bench: {', '.join(sorted(unknown))}")
    env = dict(os.environ)
    out = a.out or (c.OUT_DIR / "quick" if a.quick else None)
    if out is not None:
        env[c.OUT_ENV] = str(out.resolve())
    in_ci = os.environ.get("CI", "").lower() == "true"
    have_cluster: bool | None = None
    rows: list[tuple[str, str, float]] = []
    for b in BENCHES:
        if only and b.name not in only:
            continue
        if b.cluster:
            have_cluster = cluster_ready() if have_cluster is None else have_cluster
            if not have_cluster:
                rows.append(
                    (b.name, "FAIL (no cluster, CI=true)" if in_ci else "not run (no cluster)", 0.0)
                )
                continue
        status, took = run_one(b, a.quick, env)
        rows.append((b.name, status, took))
    print(f"\nbenchmarks ({'quick' if a.quick else 'full'}; results in {out or c.OUT_DIR}):")
    for name, status, took in rows:
        print(f"  {name:<20} {status:<28} {took:6.0f} s")
    return 1 if any(s.startswith("FAIL") for _, s, _ in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
