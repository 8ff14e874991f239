#!/usr/bin/env python
"""Checkpoint (contract version 2) and per-file manifest size for 1,000 / 10,000 / 100,000 files.

Since contract version 2 the checkpoint (``eio_common.contract.Checkpoint``, in a ConfigMap) is
a summary: counters, lag, heartbeat, where the manifest is. Per-file progress
(``eio_common.contract.FileState``: byte cursor, head fingerprint, chunk count) lives in the
*manifest*, a collection in the same Qdrant store as the points, one point per file whose
payload is ``{"sid": ..., "state": FileState JSON}`` (``importer/sink.py``).

Checkpoint states (deterministic):
  running       a first import a third through, lag of the files not yet imported, 4 skip reasons
  following     caught up and watching the source (``follow``, ``synced``, ``lastSync``)
  complete      every file imported, the run ended with ``complete``

Measured: bytes of ``Checkpoint.to_json()`` (what the importer writes), the bytes the value
takes inside a ConfigMap manifest (JSON-escaped string), gzip size, serialise/parse time; and
for the manifest: the JSON of each file's ``FileState`` and of its manifest payload, per file
(median, max) and in total. File names are Claude Code session paths (a project directory and
a UUID file name, 80-110 characters). The ConfigMap limit is 1 MiB (1,048,576 bytes).

    python bench/checkpoint_size.py            # 1k, 10k, 100k files
    python bench/checkpoint_size.py --quick    # 1k
Writes bench/out/checkpoint_size.json and docs/img/checkpoint_size.png.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c

from eio_common.contract import (
    Checkpoint,
    Counters,
    Cursor,
    FileState,
    Heartbeat,
    Lag,
    head_hash,
    manifest_collection,
    text_hash,
)

CONFIGMAP_LIMIT = 1024 * 1024
STATES = ("running", "following", "complete")
T0 = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)


def source_id(i: int, rng: random.Random) -> str:
    """A Claude Code session path: ``projects/-home-<user>-<project>/<uuid>.jsonl``."""
    project = "-home-user-src-" + "-".join(
        rng.choice(("api", "web", "importer", "operator", "notes", "infra", "client", "tools"))
        for _ in range(rng.randint(1, 3))
    )
    return f"projects/{project}-{i // 200:04d}/{uuid.UUID(int=rng.getrandbits(128))}.jsonl"


def make_file_state(i: int, rng: random.Random, complete: bool = True) -> FileState:
    """A file read to its end (``complete``) or part way (cursor inside the file)."""
    size = int(rng.lognormvariate(10.5, 1.2))  # median ~36 KB, as session files
    records = max(1, size // 900)
    chunks = max(1, size // 700)
    sid = source_id(i, rng)
    kw: dict[str, Any] = {
        "sid": sid,
        "head": head_hash(sid.encode()),
        "head_len": 1024,
        "size": size,
        "fmt": "claude",
        "chunks": chunks,
        "tail": text_hash(f"{sid}#{chunks - 1}"),
        "complete": complete,
    }
    if "mtime_ns" in FileState.model_fields:  # added after contract v2 (6d2222e)
        kw["mtime_ns"] = int((T0 - timedelta(seconds=rng.randint(0, 10**7))).timestamp() * 1e9)
    last_off = max(0, size - rng.randint(200, 4000))
    last = Cursor(offset=last_off, line=records - 1, record=records - 1, chunk=chunks - 1)
    if complete:
        kw["cursor"], kw["last"] = last, last
    else:
        part = rng.random()
        kw["cursor"] = Cursor(
            offset=int(size * part),
            line=int(records * part),
            record=int(records * part),
            chunk=int(chunks * part),
            piece=rng.randint(0, 2),
        )
        kw["last"] = Cursor(offset=int(size * part) - 700, chunk=max(0, int(chunks * part) - 1))
        kw["size"] = int(size * part)
    return FileState(**kw)


def manifest_payload(state: FileState) -> str:
    """The manifest point's payload as importer/sink.py writes it, as JSON."""
    from importer.sink import _entry

    return json.dumps(_entry(state)[2])


def make_checkpoint(n: int, state: str) -> Checkpoint:
    done = {"running": n // 3, "following": n, "complete": n}[state]
    records = done * 40
    kw: dict[str, Any] = {
        "shard": 3,
        "shards": 4,
        "manifest": f"embedded:/data/qdrant#{manifest_collection('conversations')}",
        "files_total": n,
        "files_done": done,
        "counters": Counters(
            files=done,
            records=records,
            chunks=records * 2,
            points=records * 2,
            deleted=120,
            skipped={"empty": 17, "bad_json": 3, "tool_result": 91_000, "too_short": 4_000},
        ),
        "attempt": 12,
        "peak_memory_bytes": 734_003_200,
        "heartbeat": Heartbeat(time=T0, memory_bytes=512_000_000, pod="conversations-s3-a12"),
        "complete": state == "complete",
        "last_exit": {"running": "threshold", "following": "recycle", "complete": "complete"}[
            state
        ],
    }
    if state == "running":
        kw["lag"] = Lag(files=n - done, bytes=(n - done) * 36_000, oldest=T0 - timedelta(days=90))
    if state == "following":
        kw["follow"] = True
        kw["synced"] = True
        kw["last_sync"] = T0
        kw["lag"] = Lag(files=2, bytes=5_300, oldest=T0 - timedelta(seconds=4))
    return Checkpoint(**kw)


def measure_checkpoint(n: int, state: str, reps: int = 5) -> dict[str, Any]:
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
        "json_bytes": raw,
        "configmap_value_bytes": in_configmap,
        "gzip_bytes": gz,
        "fraction_of_configmap_limit": round(in_configmap / CONFIGMAP_LIMIT, 5),
        "serialize_ms_median": round(c.median(ser) * 1000, 3),
        "parse_ms_median": round(c.median(par) * 1000, 3),
    }


def measure_manifest(n: int, seed: int = 7, in_progress: int = 4) -> dict[str, Any]:
    """``n`` files, all read to the end except ``in_progress`` of them."""
    rng = random.Random(seed)
    state_b, payload_b, sid_b = [], [], []
    t = time.perf_counter()
    for i in range(n):
        st = make_file_state(i, rng, complete=i >= in_progress)
        state_b.append(len(st.model_dump_json().encode()))
        payload_b.append(len(manifest_payload(st).encode()))
        sid_b.append(len(st.sid.encode()))
    build_s = time.perf_counter() - t
    example = make_file_state(n, random.Random(seed), complete=True)
    return {
        "files": n,
        "sid_bytes_median": statistics.median(sid_b),
        "state_bytes_median": statistics.median(state_b),
        "state_bytes_max": max(state_b),
        "state_bytes_total": sum(state_b),
        "payload_bytes_median": statistics.median(payload_b),
        "payload_bytes_max": max(payload_b),
        "payload_bytes_total": sum(payload_b),
        "payload_bytes_per_file": round(sum(payload_b) / n, 1),
        "serialize_us_per_file": round(build_s / n * 1e6, 1),
        "example_state": example.model_dump_json(),
    }


def _status() -> dict[str, int]:
    with open("/proc/self/status") as fh:
        return {
            k: int(v.split()[0]) * 1024
            for k, _, v in (line.partition(":") for line in fh)
            if k in ("VmRSS", "RssAnon", "RssFile")
        }


def load_manifest_child(path: str) -> dict[str, Any]:
    """What the importer does at every start, with its own code: open the embedded store
    (``importer.sink.EdgeSink``) and load the manifest into its compact in-memory form."""
    t0 = time.monotonic()
    from importer.sink import EdgeSink

    t1 = time.monotonic()
    sink = EdgeSink(path, "bench", False, 384)
    t2 = time.monotonic()
    states = sink.load_manifest(lambda _sid: True)
    t3 = time.monotonic()
    mem = _status()
    sink.close()
    return {
        "entries": len(states),
        "import_s": t1 - t0,
        "open_s": t2 - t1,
        "load_s": t3 - t2,
        "scroll_s": t3 - t2,
        "rss_anon": mem.get("RssAnon", 0),
        "rss_file": mem.get("RssFile", 0),
    }


def measure_edge_manifest(n: int, root: Path, seed: int = 7, reps: int = 3) -> dict[str, Any]:
    """The manifest of ``n`` files in Qdrant Edge as the importer keeps it: bytes on disk and
    the time a fresh process takes to load it (median of ``reps``)."""
    import shutil
    import subprocess

    path = root / f"manifest-{n}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    from importer.sink import EdgeSink

    rng = random.Random(seed)
    try:
        sink = EdgeSink(str(path), "bench", True, 384)
        t = time.perf_counter()
        for b0 in range(0, n, 512):
            sink.save_manifest(
                [make_file_state(i, rng, complete=i >= 4) for i in range(b0, min(n, b0 + 512))]
            )
        sink.sync()
        write_s = time.perf_counter() - t
        sink.close()
        disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        loads = []
        for _ in range(reps):
            p = subprocess.run(
                [c.PYTHON, str(Path(__file__).resolve()), "--child-load", str(path)],
                capture_output=True,
                text=True,
                check=True,
            )
            loads.append(json.loads(p.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(path, ignore_errors=True)
    assert loads[0]["entries"] == n
    return {
        "files": n,
        "write_s": round(write_s, 3),
        "disk_bytes": disk,
        "load_s_median": round(c.median(x["load_s"] for x in loads), 3),
        "open_s_median": round(c.median(x["open_s"] for x in loads), 3),
        "scroll_s_median": round(c.median(x["scroll_s"] for x in loads), 3),
        "rss_anon_median": c.median(x["rss_anon"] for x in loads),
        "rss_file_median": c.median(x["rss_file"] for x in loads),
        "loads": loads,
    }


def plot(rows: list[dict[str, Any]], manifests: list[dict[str, Any]]) -> Path:
    plt = c.plt()
    fig, ax = plt.subplots(figsize=(9, 4.8))
    sizes = sorted({r["files"] for r in rows})
    series = [
        (
            f"checkpoint in the ConfigMap: {s}",
            [
                next(
                    r["configmap_value_bytes"] for r in rows if r["files"] == n and r["state"] == s
                )
                for n in sizes
            ],
        )
        for s in STATES
    ]
    series.append(
        (
            "manifest payloads, all files (in Qdrant)",
            [next(m["payload_bytes_total"] for m in manifests if m["files"] == n) for n in sizes],
        )
    )
    width = 0.8 / len(series)
    for k, (label, ys) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(sizes))]
        bars = ax.bar(xs, ys, width, label=label)
        for b, y in zip(bars, ys, strict=True):
            txt = f"{y:,} B" if y < 10_000 else f"{y / 2**20:,.1f} MiB"
            ax.text(b.get_x() + b.get_width() / 2, y, txt, ha="center", va="bottom", fontsize=7)
    ax.axhline(CONFIGMAP_LIMIT, color="red", ls="--", lw=1)
    ax.text(
        -0.45,
        CONFIGMAP_LIMIT,
        "ConfigMap limit 1 MiB",
        color="red",
        va="bottom",
        ha="left",
        fontsize=8,
    )
    ax.set_yscale("log")
    ax.set_xticks(range(len(sizes)), [f"{n:,} files" for n in sizes])
    ax.set_ylabel("bytes")
    ax.set_title("Checkpoint (ConfigMap) and per-file manifest (Qdrant), contract v2")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    p = c.save_figure(fig, "checkpoint_size")
    return p


def main(argv: list[str] | None = None) -> int:
    ap = c.arg_parser(__doc__, "1,000 files only")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument(
        "--no-edge", action="store_true", help="skip the manifest in Qdrant Edge (on disk, load)"
    )
    ap.add_argument("--dir", default="/var/tmp/eio-bench", help="where the Edge manifest goes")
    ap.add_argument("--child-load", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child_load:
        print(json.dumps(load_manifest_child(a.child_load)))
        return 0
    sizes = [1_000] if a.quick else [1_000, 10_000, 100_000]
    rows = []
    print(
        f"{'files':>8s} {'state':10s} {'json B':>7s} {'in CM B':>8s} {'gzip B':>7s} "
        f"{'% limit':>8s} {'ser ms':>7s} {'parse ms':>8s}"
    )
    for n in sizes:
        for state in STATES:
            r = measure_checkpoint(n, state)
            rows.append(r)
            print(
                f"{n:8,d} {state:10s} {r['json_bytes']:7,d} {r['configmap_value_bytes']:8,d} "
                f"{r['gzip_bytes']:7,d} {100 * r['fraction_of_configmap_limit']:7.3f}% "
                f"{r['serialize_ms_median']:7.3f} {r['parse_ms_median']:8.3f}"
            )
    print(
        f"\n{'files':>8s} {'sid B':>6s} {'FileState B p50/max':>20s} {'payload B p50/max':>18s} "
        f"{'payload B/file':>14s} {'payloads total':>15s}"
    )
    manifests = []
    for n in sizes:
        m = measure_manifest(n)
        manifests.append(m)
        print(
            f"{n:8,d} {m['sid_bytes_median']:6.0f} "
            f"{m['state_bytes_median']:>11.0f}/{m['state_bytes_max']:<8,d} "
            f"{m['payload_bytes_median']:>9.0f}/{m['payload_bytes_max']:<8,d} "
            f"{m['payload_bytes_per_file']:14.1f} {m['payload_bytes_total']:15,d}"
        )
    print(f"\na FileState: {manifests[-1]['example_state']}")
    edge: list[dict[str, Any]] = []
    if not a.no_edge:
        try:
            import qdrant_edge  # noqa: F401
        except ImportError:
            print("qdrant_edge not installed: manifest in Edge not measured")
        else:
            print(
                f"\n{'files':>8s} {'write s':>8s} {'on disk MiB':>11s} {'load s p50':>10s} "
                f"{'of it scroll s':>14s} {'RssAnon MiB':>11s}"
            )
            for n in sizes:
                e = measure_edge_manifest(n, Path(a.dir))
                edge.append(e)
                print(
                    f"{n:8,d} {e['write_s']:8.2f} {c.mib(e['disk_bytes']):11,.1f} "
                    f"{e['load_s_median']:10.3f} {e['scroll_s_median']:14.3f} "
                    f"{c.mib(e['rss_anon_median']):11,.1f}"
                )
    c.write_result(
        "checkpoint_size",
        {
            "command": "python bench/checkpoint_size.py" + (" --quick" if a.quick else ""),
            "contract_version": Checkpoint.model_fields["version"].default,
            "rows": rows,
            "manifest": manifests,
            "manifest_in_edge": edge,
        },
        a.quick,
    )
    if not a.no_plot:
        print(f"wrote {plot(rows, manifests)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
