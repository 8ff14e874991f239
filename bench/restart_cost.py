#!/usr/bin/env python
"""Cost of planned restarts: total import time with ``--recycle-every-files`` 10 / 50 / none.

The bench plays the operator's restart loop locally: it runs the real
``embedding-importer run`` on the same corpus (``bench/corpus.py``, Claude Code JSONL) into an
embedded Qdrant (``--qdrant-path``) with a file checkpoint; on exit 75 it starts the next
attempt at once (``--attempt k``), until exit 0. Measured per configuration: total wall time,
number of runs, and per run the wall time, the model load time the importer logs and the rest
of its start-up (wall minus the import loop's own time). Also: model load in a fresh
interpreter (imports + Embedder), median of 5.

    python bench/restart_cost.py             # 100 files, recycle 0 / 10 / 50, 1 rep
    python bench/restart_cost.py --quick     # 2 files, recycle 0 / 1
Writes bench/out/restart_cost.json and docs/img/restart_cost.png.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c
import corpus
from throughput import WORK

LOAD_RE = re.compile(r"loaded from .* in ([0-9.]+)s")
RUN_RE = re.compile(r"this run: (\d+) chunks in ([0-9.]+)s")


def import_with_restarts(source: Path, recycle: int, max_runs: int = 500) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"rc-{recycle}-", dir=WORK))
    runs: list[dict[str, Any]] = []
    t0 = time.monotonic()
    try:
        for attempt in range(max_runs):
            cmd = c.importer_run_cmd(
                source,
                tmp / "q",
                tmp / "ck.json",
                "--format",
                "claude",
                "--memory-threshold",
                "0",
                "--recycle-every-files",
                str(recycle),
                "--attempt",
                str(attempt),
            )
            t = time.monotonic()
            p = subprocess.run(cmd, capture_output=True, text=True, check=False)
            wall = time.monotonic() - t
            log = p.stderr + p.stdout
            m_load = LOAD_RE.search(log)
            m_run = RUN_RE.search(log)
            run = {
                "attempt": attempt,
                "rc": p.returncode,
                "wall_s": round(wall, 3),
                "model_load_s": float(m_load.group(1)) if m_load else None,
                "loop_s": float(m_run.group(2)) if m_run else None,
                "chunks": int(m_run.group(1)) if m_run else None,
            }
            if run["loop_s"] is not None:
                run["startup_and_exit_s"] = round(wall - run["loop_s"], 3)
            runs.append(run)
            if p.returncode == 0:
                break
            if p.returncode != 75:
                print(log[-3000:], file=sys.stderr)
                break
        total = time.monotonic() - t0
        ck = json.loads((tmp / "ck.json").read_text()) if (tmp / "ck.json").exists() else {}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "recycle_every_files": recycle,
        "total_s": round(total, 2),
        "runs": len(runs),
        "restarts": len(runs) - 1,
        "final_rc": runs[-1]["rc"] if runs else None,
        "points": ck.get("counters", {}).get("points"),
        "files_done_counter": ck.get("counters", {}).get("files"),
        "complete": ck.get("complete"),
        "per_run": runs,
    }


def model_load_times(reps: int = 5) -> list[float]:
    code = (
        "import time; t=time.monotonic(); from importer.model import Embedder; "
        "from importer.settings import DEFAULT_MODEL; Embedder(DEFAULT_MODEL, None, None, 0); "
        "print(time.monotonic()-t)"
    )
    out = []
    for _ in range(reps):
        p = subprocess.run([c.PYTHON, "-c", code], capture_output=True, text=True, check=True)
        out.append(float(p.stdout.strip().splitlines()[-1]))
    return out


def plot(data: dict[str, Any]) -> Path:
    plt = c.plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    rs = data["results"]
    labels = [
        f"every {r['recycle_every_files']}" if r["recycle_every_files"] else "none" for r in rs
    ]
    totals = [r["total_s"] for r in rs]
    bars = axes[0].bar(labels, totals, color=["tab:gray", "tab:blue", "tab:green"][: len(rs)])
    base = rs[0]["total_s"]
    for b, r in zip(bars, rs, strict=True):
        extra = f"\n{r['runs']} runs, {100 * (r['total_s'] / base - 1):+.1f}%"
        axes[0].text(
            b.get_x() + b.get_width() / 2,
            r["total_s"],
            f"{r['total_s']:.0f} s{extra}",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    axes[0].set_ylabel("total import time (s)")
    axes[0].set_xlabel("--recycle-every-files")
    axes[0].set_title(f"{data['corpus']['files']} files, restart loop until exit 0", fontsize=10)
    axes[0].set_ylim(0, max(totals) * 1.25)
    axes[0].grid(True, axis="y", alpha=0.3)
    ax = axes[1]
    for r in rs:
        xs = [p["attempt"] for p in r["per_run"] if p.get("startup_and_exit_s") is not None]
        ys = [
            p["startup_and_exit_s"] for p in r["per_run"] if p.get("startup_and_exit_s") is not None
        ]
        ax.plot(xs, ys, "o-", ms=3, label=f"recycle {r['recycle_every_files'] or 'none'}")
    ax.set_xlabel("attempt")
    ax.set_ylabel("per-run start-up + exit (s)")
    ax.set_title("fixed cost of one run (wall minus import loop)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    p = c.save_figure(fig, "restart_cost")
    return p


def main(argv: list[str] | None = None) -> int:
    ap = c.arg_parser(__doc__)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--recycle", default="0,10,50")
    a = ap.parse_args(argv)
    if a.quick:
        a.files, a.recycle = 2, "0,1"
    WORK.mkdir(parents=True, exist_ok=True)
    source = WORK / f"corpus-{a.files}"
    shape = corpus.generate(source, a.files)
    print(f"corpus: {shape}", flush=True)
    loads = model_load_times(1 if a.quick else 5)
    print(
        f"model load in a fresh interpreter (imports + Embedder): median "
        f"{c.median(loads):.2f} s of {[round(x, 2) for x in loads]}",
        flush=True,
    )
    results = []
    for recycle in [int(x) for x in a.recycle.split(",")]:
        r = import_with_restarts(source, recycle)
        results.append(r)
        startups = [
            p["startup_and_exit_s"] for p in r["per_run"] if p.get("startup_and_exit_s") is not None
        ]
        r["startup_and_exit_median_s"] = round(c.median(startups), 3) if startups else None
        ml = [p["model_load_s"] for p in r["per_run"] if p.get("model_load_s") is not None]
        r["model_load_median_s"] = round(c.median(ml), 3) if ml else None
        print(
            f"recycle {recycle or 'none':>4}: {r['total_s']:7.1f} s, {r['runs']} runs, "
            f"final rc {r['final_rc']}, points {r['points']}, per-run start-up+exit median "
            f"{r['startup_and_exit_median_s']} s, model load median {r['model_load_median_s']}"
            " s",
            flush=True,
        )
    base = results[0]["total_s"] if results and results[0]["recycle_every_files"] == 0 else None
    for r in results:
        if base:
            r["overhead_pct"] = round(100 * (r["total_s"] / base - 1), 1)
            # noise-robust estimate: restarts x median fixed cost of a run, over the base time
            if r["startup_and_exit_median_s"] is not None:
                r["overhead_est_pct"] = round(
                    100 * r["restarts"] * r["startup_and_exit_median_s"] / base, 1
                )
            print(
                f"recycle {r['recycle_every_files'] or 'none':>4}: overhead "
                f"{r['overhead_pct']:+.1f}% measured, "
                f"{r.get('overhead_est_pct', float('nan')):+.1f}% from restarts x start-up",
                flush=True,
            )
    data = {
        "command": "python bench/restart_cost.py" + (" --quick" if a.quick else ""),
        "corpus": shape,
        "model_load_fresh_interpreter_s": loads,
        "results": results,
    }
    c.write_result("restart_cost", data, a.quick)
    print(f"wrote {plot(data)}")
    return 1 if any(r["final_rc"] != 0 for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
