#!/usr/bin/env python
"""Checkpoint size (importer.contract.Checkpoint JSON) for 1,000 / 10,000 / 100,000 files.

States (deterministic, seed 7):
  all-done          every file done, complete
  half-gaps         the first half of the list processed, ~2% of those files not done (skipped
                    or failed: one gap each), 4 files in progress with record/chunk offsets
  in-progress       first 30% done without gaps, 4 files in progress (a sort window)
  scattered-worst   every other file done (worst case for the range encoding: N/2 ranges)

Measured: bytes of ``Checkpoint.to_json()`` (what the importer writes), the bytes the value
takes inside a ConfigMap manifest (JSON-escaped string), gzip size, and serialise/parse time.
The ConfigMap limit is 1 MiB (1,048,576 bytes) for the whole object.

    python bench/checkpoint_size.py            # 1k, 10k, 100k files
    python bench/checkpoint_size.py --quick    # 1k, 10k
Writes bench/out/checkpoint_size.json and docs/img/checkpoint_size.png.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c

from importer.contract import Checkpoint, Counters, Heartbeat, encode_ranges, files_digest

CONFIGMAP_LIMIT = 1024 * 1024
STATES = ("all-done", "half-gaps", "in-progress", "scattered-worst")


def make_checkpoint(n: int, state: str, seed: int = 7) -> Checkpoint:
    rng = random.Random(seed)
    names = [f"projects/-home-user-project-{i // 100:04d}/{i:08x}-session.jsonl" for i in range(n)]
    in_progress: dict[int, int] = {}
    if state == "all-done":
        done = list(range(n))
    elif state == "half-gaps":
        half = n // 2
        done = [i for i in range(half) if rng.random() >= 0.02]
        in_progress = {half + k: rng.randint(1, 3000) for k in range(4)}
    elif state == "in-progress":
        head = int(n * 0.3)
        done = list(range(head))
        in_progress = {head + k: rng.randint(1, 3000) for k in range(4)}
    elif state == "scattered-worst":
        done = list(range(0, n, 2))
    else:
        raise ValueError(state)
    files_done = len(done)
    records = files_done * 240 + sum(in_progress.values())
    kw: dict[str, Any] = {
        "shard": 3,
        "shards": 4,
        "files_total": n,
        "files_digest": files_digest(sorted(names)),
        "done": encode_ranges(done),
        "offsets": in_progress,
        "counters": Counters(
            files=files_done,
            records=records,
            chunks=records * 2,
            points=records * 2,
            skipped={"empty": 17, "bad_json": 3} if state != "all-done" else {},
        ),
        "attempt": 12,
        "peak_memory_bytes": 734_003_200,
        "heartbeat": Heartbeat(
            time=datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC),
            memory_bytes=512_000_000,
            pod="conversations-2026-s3-a12",
        ),
        "complete": state == "all-done",
        "last_exit": "complete" if state == "all-done" else "threshold",
    }
    if "chunk_offsets" in Checkpoint.model_fields:
        kw["chunk_offsets"] = {i: off * 2 for i, off in in_progress.items()}
    return Checkpoint(**kw)


def measure(n: int, state: str, reps: int = 5) -> dict[str, Any]:
    cp = make_checkpoint(n, state)
    text = cp.to_json()
    raw = len(text.encode())
    in_configmap = len(json.dumps({"checkpoint.json": text}).encode())
    gz = len(gzip.compress(text.encode(), 9))
    ser, par = [], []
    for _ in range(reps):
        t = time.perf_counter()
        cp.to_json()
        ser.append(time.perf_counter() - t)
        t = time.perf_counter()
        back = Checkpoint.from_json(text)
        par.append(time.perf_counter() - t)
    assert back.files_done == cp.files_done
    return {
        "files": n,
        "state": state,
        "files_done": cp.files_done,
        "ranges": cp.done.count(",") + 1 if cp.done else 0,
        "json_bytes": raw,
        "configmap_value_bytes": in_configmap,
        "gzip_bytes": gz,
        "fraction_of_configmap_limit": round(in_configmap / CONFIGMAP_LIMIT, 5),
        "serialize_ms_median": round(c.median(ser) * 1000, 3),
        "parse_ms_median": round(c.median(par) * 1000, 3),
    }


def plot(rows: list[dict[str, Any]]) -> Path:
    plt = c.plt()
    c.IMG_DIR.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    sizes = sorted({r["files"] for r in rows})
    width = 0.8 / len(STATES)
    for k, state in enumerate(STATES):
        ys = [
            next(
                r["configmap_value_bytes"] for r in rows if r["files"] == n and r["state"] == state
            )
            for n in sizes
        ]
        xs = [i + (k - (len(STATES) - 1) / 2) * width for i in range(len(sizes))]
        bars = ax.bar(xs, ys, width, label=state)
        for b, y in zip(bars, ys, strict=True):
            ax.text(
                b.get_x() + b.get_width() / 2,
                y,
                f"{y / 1024:,.1f}K",
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.axhline(CONFIGMAP_LIMIT, color="red", ls="--", lw=1)
    ax.text(
        len(sizes) - 0.5,
        CONFIGMAP_LIMIT,
        "ConfigMap limit 1 MiB",
        color="red",
        va="bottom",
        ha="right",
        fontsize=8,
    )
    ax.set_yscale("log")
    ax.set_xticks(range(len(sizes)), [f"{n:,} files" for n in sizes])
    ax.set_ylabel("checkpoint bytes in the ConfigMap")
    ax.set_title("Checkpoint size by number of files and state")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    p = c.IMG_DIR / "checkpoint_size.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 and 10,000 files only")
    ap.add_argument("--no-plot", action="store_true")
    a = ap.parse_args(argv)
    sizes = [1_000, 10_000] if a.quick else [1_000, 10_000, 100_000]
    rows = []
    print(
        f"{'files':>8s} {'state':16s} {'ranges':>7s} {'json B':>9s} {'in CM B':>9s} "
        f"{'gzip B':>8s} {'% limit':>8s} {'ser ms':>7s} {'parse ms':>8s}"
    )
    for n in sizes:
        for state in STATES:
            r = measure(n, state)
            rows.append(r)
            print(
                f"{n:8,d} {state:16s} {r['ranges']:7,d} {r['json_bytes']:9,d} "
                f"{r['configmap_value_bytes']:9,d} {r['gzip_bytes']:8,d} "
                f"{100 * r['fraction_of_configmap_limit']:7.2f}% "
                f"{r['serialize_ms_median']:7.2f} {r['parse_ms_median']:8.2f}"
            )
    name = "checkpoint_size_quick" if a.quick else "checkpoint_size"
    path = c.write_json(
        name,
        {
            "command": "python bench/checkpoint_size.py" + (" --quick" if a.quick else ""),
            "rows": rows,
        },
    )
    print(f"wrote {path}")
    if not a.no_plot and not a.quick:
        print(f"wrote {plot(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
